"""The analysts' daily HTML report (queries in :mod:`pipeline.warehouse`)."""
