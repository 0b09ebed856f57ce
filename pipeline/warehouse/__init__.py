"""The warehouse: the SQL database of clips, predictions and model versions (SQLite or PostgreSQL).

Every SQL statement the pipeline runs lives in this package, each behind a named method of
:class:`Warehouse` (see :mod:`pipeline.warehouse.database` for which module holds which tables).
"""

from pipeline.warehouse.database import ClipRecord, ModelRecord, Warehouse, utc_now

__all__ = ["ClipRecord", "ModelRecord", "Warehouse", "utc_now"]
