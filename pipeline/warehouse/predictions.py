"""Predictions: ``predictions`` (one row per clip and model version) and
``segment_predictions`` (one per segment of a long clip), written as upserts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from pipeline.warehouse.connection import WarehouseConnection

_PREDICTION_COLUMNS = (
    "model_version",
    "predicted_label",
    "confidence",
    "probabilities",
    "scored_at",
    "run_id",
    "logical_date",
)


class PredictionsSql(WarehouseConnection):
    """Writing predictions, and which clips a version has scored."""

    def scored_clip_ids(self, model_version: str) -> set[str]:
        with self.engine.connect() as conn:
            return set(
                conn.execute(
                    sa.text("SELECT clip_id FROM predictions WHERE model_version = :v"),
                    {"v": model_version},
                ).scalars()
            )

    def upsert_predictions(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert or replace clip-level prediction rows keyed on (clip_id, model_version)."""
        return self._upsert(
            "predictions",
            ("clip_id", "model_version"),
            [{"n_segments": 1, **row} for row in rows],
            (*_PREDICTION_COLUMNS, "n_segments"),
        )

    def upsert_segment_predictions(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert or replace per-segment rows keyed on (clip_id, segment_index, model_version)."""
        return self._upsert(
            "segment_predictions",
            ("clip_id", "segment_index", "model_version"),
            list(rows),
            (*_PREDICTION_COLUMNS, "n_segments", "start_seconds", "end_seconds"),
        )

    def _upsert(
        self,
        table: str,
        keys: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
        columns: Sequence[str],
    ) -> int:
        """``INSERT ... ON CONFLICT (keys) DO UPDATE`` (SQLite >= 3.24 and PostgreSQL alike);
        ``probabilities`` dicts are stored as JSON text."""
        if not rows:
            return 0
        names = [*keys, *(c for c in columns if c not in keys)]
        # Key order: two runs upserting overlapping rows lock them in the same order, so
        # PostgreSQL never sees them deadlock.
        ordered = sorted(rows, key=lambda row: tuple(row[k] for k in keys))
        payload = [
            {**row, "probabilities": json.dumps(row["probabilities"], sort_keys=True)}
            for row in ordered
        ]
        updates = ", ".join(f"{c} = excluded.{c}" for c in names if c not in keys)
        statement = (
            f"INSERT INTO {table} ({', '.join(names)})"
            f" VALUES ({', '.join(':' + c for c in names)})"
            f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
        )
        with self.engine.begin() as conn:
            conn.execute(sa.text(statement), payload)
        return len(payload)
