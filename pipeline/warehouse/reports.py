"""Summaries for ``stpipe status`` and the demo: counts over the catalogue and predictions."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from pipeline.warehouse.connection import WarehouseConnection


@dataclass(frozen=True)
class ClipTally:
    """How many clips have one status and modality (None: the clip never probed)."""

    status: str
    modality: str | None
    clips: int
    labelled: int


@dataclass(frozen=True)
class LabelTally:
    """How many clips a model version gave one label, and its mean confidence (0-1)."""

    predicted_label: str
    clips: int
    mean_confidence: float


@dataclass(frozen=True)
class HeldOutScore:
    """A model version's predictions on the labelled test-split clips it scored."""

    clips: int
    correct: int

    @property
    def accuracy(self) -> float | None:
        """Fraction correct, 0-1; None when no test-split clip was scored."""
        return self.correct / self.clips if self.clips else None


class ReportsSql(WarehouseConnection):
    """Read-only counts over the warehouse's tables and views."""

    def clip_tallies(self) -> list[ClipTally]:
        """Clips per status and modality, with how many carry a label; ordered by status, then
        modality (clips that never probed last)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT status, modality, COUNT(*) AS clips,"
                    " SUM(CASE WHEN label IS NOT NULL THEN 1 ELSE 0 END) AS labelled"
                    " FROM media_files GROUP BY status, modality"
                    " ORDER BY status, modality IS NULL, modality"
                )
            )
            return [
                ClipTally(r.status, r.modality, int(r.clips), int(r.labelled or 0)) for r in rows
            ]

    def label_tallies(self, model_version: str) -> list[LabelTally]:
        """Clips ``model_version`` gave each label (every clip it scored), by label."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT predicted_label, COUNT(*) AS clips, AVG(confidence) AS mean_confidence"
                    " FROM predictions WHERE model_version = :v"
                    " GROUP BY predicted_label ORDER BY predicted_label"
                ),
                {"v": model_version},
            )
            return [
                LabelTally(r.predicted_label, int(r.clips), float(r.mean_confidence)) for r in rows
            ]

    def held_out_score(self, model_version: str) -> HeldOutScore:
        """How many labelled test-split clips ``model_version`` scored, and got right."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT COUNT(*) AS n,"
                    " SUM(CASE WHEN p.predicted_label = m.label THEN 1 ELSE 0 END) AS correct"
                    " FROM predictions p JOIN media_files m ON m.clip_id = p.clip_id"
                    " WHERE p.model_version = :v AND m.split = 'test' AND m.label IS NOT NULL"
                ),
                {"v": model_version},
            ).one()
        return HeldOutScore(clips=int(row.n or 0), correct=int(row.correct or 0))

    def unlabelled_clips_scored(self) -> int:
        """Unlabelled ok clips the production model has scored (the ``latest_predictions``
        view analysts read)."""
        with self.engine.connect() as conn:
            n = conn.execute(
                sa.text("SELECT COUNT(*) FROM latest_predictions WHERE true_label IS NULL")
            ).scalar_one()
        return int(n or 0)
