"""Stage 1, ingest: find media files in the landing folder (or a manifest), hash, probe, register
or quarantine them.
"""
