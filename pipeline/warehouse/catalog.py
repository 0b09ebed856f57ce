"""The media catalogue: ``media_files`` (one row per clip) and ``media_sources`` (every path a
clip was seen at), with labels, splits and quarantine.

A clip's label as read here is its *effective* label (view ``clip_labels``): a reviewer's
latest label (``label_feedback``) when there is one, else its ingest label; so training and
evaluation use reviewers' corrections without knowing about them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pipeline.warehouse.connection import WarehouseConnection, utc_now

_CLIP_COLUMNS = (
    "m.clip_id, m.uri, m.media_uri, m.modality, l.label, m.split, m.status, m.error,"
    " m.duration_seconds, l.label_source"
)
_CLIPS = "media_files m JOIN clip_labels l ON l.clip_id = m.clip_id"


@dataclass(frozen=True)
class ClipRecord:
    """A row of ``media_files`` as the stages need it. ``label`` is the effective label (a
    reviewer's latest, else the ingest label) and ``label_source`` where it came from:
    ``feedback``, ``ingest`` or ``manifest`` (None for an unlabelled clip)."""

    clip_id: str
    uri: str
    media_uri: str | None
    modality: str | None
    label: str | None
    split: str
    status: str
    error: str | None
    duration_seconds: float | None
    label_source: str | None = None


class CatalogSql(WarehouseConnection):
    """Reads and writes of ``media_files`` and ``media_sources``."""

    def known_sources(self) -> dict[str, tuple[int, float, str, str | None]]:
        """uri -> (size, mtime, clip_id, label) for every file seen before."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT uri, size_bytes, mtime, clip_id, label FROM media_sources")
            )
            return {r.uri: (int(r.size_bytes), float(r.mtime), r.clip_id, r.label) for r in rows}

    def get_clip(self, clip_id: str) -> ClipRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.text(f"SELECT {_CLIP_COLUMNS} FROM {_CLIPS} WHERE m.clip_id = :c"),
                {"c": clip_id},
            ).first()
        return ClipRecord(**row._mapping) if row else None

    def add_clip(self, row: Mapping[str, Any]) -> bool:
        """Insert a new ``media_files`` row; return False (and change nothing) if it exists. A
        labelled row's ``label_source`` defaults to ``ingest``."""
        now = utc_now()
        source = row.get("label_source", "ingest") if row.get("label") else None
        values = {**row, "label_source": source, "ingested_at": now, "updated_at": now}
        columns = ", ".join(values)
        params = ", ".join(f":{k}" for k in values)
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.text(
                    f"INSERT INTO media_files ({columns}) VALUES ({params})"
                    " ON CONFLICT (clip_id) DO NOTHING"
                ),
                values,
            )
            return bool(result.rowcount)

    def set_label_if_missing(self, clip_id: str, label: str, source: str = "ingest") -> bool:
        """Give an unlabelled clip its ingest label (``source``: ``ingest`` or ``manifest``);
        never overwrite an existing label."""
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.text(
                    "UPDATE media_files SET label = :l, label_source = :s, updated_at = :t"
                    " WHERE clip_id = :c AND label IS NULL"
                ),
                {"c": clip_id, "l": label, "s": source, "t": utc_now()},
            )
            return bool(result.rowcount)

    def set_split(self, clip_id: str, split: str) -> None:
        """Move a clip to another split (a manifest decided so)."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE media_files SET split = :s, updated_at = :t WHERE clip_id = :c"),
                {"c": clip_id, "s": split, "t": utc_now()},
            )

    def record_source(
        self, uri: str, clip_id: str, size_bytes: int, mtime: float, label: str | None
    ) -> None:
        now = utc_now()
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO media_sources"
                    " (uri, clip_id, size_bytes, mtime, label, first_seen_at, last_seen_at)"
                    " VALUES (:u, :c, :s, :m, :l, :t, :t)"
                    " ON CONFLICT (uri) DO UPDATE SET clip_id = excluded.clip_id,"
                    " size_bytes = excluded.size_bytes, mtime = excluded.mtime,"
                    " label = excluded.label, last_seen_at = excluded.last_seen_at"
                ),
                {"u": uri, "c": clip_id, "s": size_bytes, "m": mtime, "l": label, "t": now},
            )

    def quarantine_clip(self, clip_id: str, error: str) -> None:
        """Mark a clip bad (for example, it probed but fails to decode) with the reason."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE media_files SET status = 'quarantined', error = :e, updated_at = :t"
                    " WHERE clip_id = :c"
                ),
                {"c": clip_id, "e": error, "t": utc_now()},
            )

    def clips(self, *, status: str | None = "ok", labelled: bool | None = None) -> list[ClipRecord]:
        """Clips in clip-id order, filtered by status and by whether they carry an (effective)
        label."""
        clauses, params = [], {}
        if status is not None:
            clauses.append("m.status = :status")
            params["status"] = status
        if labelled is True:
            clauses.append("l.label IS NOT NULL")
        elif labelled is False:
            clauses.append("l.label IS NULL")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(f"SELECT {_CLIP_COLUMNS} FROM {_CLIPS}{where} ORDER BY m.clip_id"), params
            )
            return [ClipRecord(**r._mapping) for r in rows]
