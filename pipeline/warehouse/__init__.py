"""The warehouse: the SQL database of clips, predictions and model versions (SQLite or PostgreSQL).

Every SQL statement the pipeline runs lives in this package, each behind a named method.
"""
