"""Queries only the daily report needs (the views it plots have their own modules)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time

import sqlalchemy as sa

from pipeline.warehouse.connection import WarehouseConnection
from pipeline.warehouse.work_claims import as_datetime


@dataclass(frozen=True)
class ScoringRunRecord:
    """The predictions one scoring run wrote with one model version: how many, and when the
    first and the last were written (``seconds`` between them)."""

    run_id: str
    model_version: str
    clips: int
    first_scored_at: datetime  # UTC
    last_scored_at: datetime
    seconds: float


class DailyReportSql(WarehouseConnection):
    """Reads for :mod:`pipeline.reporting.daily`."""

    def recent_scoring_runs(self, *, until: date, limit: int = 5) -> list[ScoringRunRecord]:
        """The ``limit`` scoring runs whose last prediction was written before ``until`` (a day,
        exclusive), newest first. Predictions written outside a run (no run id) are left out."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT run_id, model_version, COUNT(*) AS clips,"
                    " MIN(scored_at) AS first_scored_at, MAX(scored_at) AS last_scored_at"
                    " FROM predictions WHERE run_id IS NOT NULL AND scored_at < :until"
                    " GROUP BY run_id, model_version"
                    " ORDER BY MAX(scored_at) DESC, run_id LIMIT :limit"
                ),
                {"until": datetime.combine(until, time(0), tzinfo=UTC), "limit": limit},
            )
            records = []
            for r in rows:
                first, last = as_datetime(r.first_scored_at), as_datetime(r.last_scored_at)
                seconds = (last - first).total_seconds()
                records.append(
                    ScoringRunRecord(r.run_id, r.model_version, int(r.clips), first, last, seconds)
                )
            return records
