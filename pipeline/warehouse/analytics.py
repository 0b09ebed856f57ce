"""The analyst views, read for the report, alerts and the CLI: accuracy, drift, confidence,
quarantine, scoring per day, segment timelines and the review queue (migration 009).

Each method reads one view (accuracy also reads its per-class companion) and returns typed
frozen rows. ``days`` counts back from ``until`` (default: today, UTC), both ends' days
included: ``days=30`` is ``until`` and the 29 days before it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from pipeline.warehouse.connection import WarehouseConnection
from pipeline.warehouse.work_claims import as_datetime


@dataclass(frozen=True)
class AccuracyDay:
    """``model_accuracy_daily`` (and ``model_recall_daily``): a version's predictions of one day
    on labelled clips it never trained or validated on, judged by their effective labels."""

    day: date
    model_version: str
    labelled_clips: int
    correct: int
    accuracy: float  # 0-1
    reviewed_clips: int  # of labelled_clips, those labelled by a reviewer
    reviewed_correct: int
    recall: dict[str, float] = field(default_factory=dict)  # true label -> recall, 0-1


@dataclass(frozen=True)
class DriftDay:
    """``prediction_drift``: a version's predicted labels of one day against its training
    labels. ``psi`` is the population stability index; ``drifted`` is ``psi > psi_threshold``."""

    day: date
    model_version: str
    clips: int
    classes: int
    psi: float
    psi_threshold: float
    drifted: bool


@dataclass(frozen=True)
class ConfidenceDay:
    """``confidence_daily``: a version's confidences (0-1) of one day, nearest-rank quantiles,
    and how many fell below the review threshold."""

    day: date
    model_version: str
    clips: int
    mean_confidence: float
    p10: float
    p50: float
    p90: float
    below_review_threshold: int
    review_threshold: float


@dataclass(frozen=True)
class QuarantineDay:
    """``quarantine_daily``: files quarantined on ``day`` for ``reason``, and all files
    registered that day."""

    day: date
    reason: str
    files: int
    ingested: int


@dataclass(frozen=True)
class ScoredDay:
    """``daily_label_counts``: clips a version gave ``predicted_label`` on one day."""

    day: date
    model_version: str
    predicted_label: str
    clips: int
    mean_confidence: float


@dataclass(frozen=True)
class ReviewItem:
    """``review_queue``: a production prediction below the review threshold that no reviewer
    has labelled. ``true_label`` is the ingest label, if any."""

    clip_id: str
    model_version: str
    predicted_label: str
    confidence: float
    probabilities: dict[str, float]
    scored_at: datetime
    uri: str
    modality: str | None
    true_label: str | None
    label_source: str | None


@dataclass(frozen=True)
class SegmentLabel:
    """``segment_timeline``: one segment of a long clip, as the production model labelled it;
    seconds from the clip's start."""

    clip_id: str
    model_version: str
    segment_index: int
    n_segments: int
    start_seconds: float
    end_seconds: float
    predicted_label: str
    confidence: float


class AnalyticsSql(WarehouseConnection):
    """Reads of the analyst views."""

    def accuracy_daily(self, days: int = 30, *, until: date | None = None) -> list[AccuracyDay]:
        """Per day and model version, oldest first."""
        window = self._window(days, until)
        recall: dict[tuple[date, str], dict[str, float]] = defaultdict(dict)
        for r in self._rows(
            "SELECT day, model_version, true_label, recall FROM model_recall_daily", window
        ):
            recall[(_day(r["day"]), r["model_version"])][r["true_label"]] = float(r["recall"])
        return [
            AccuracyDay(
                day=_day(r["day"]),
                model_version=r["model_version"],
                labelled_clips=int(r["labelled_clips"]),
                correct=int(r["correct"]),
                accuracy=float(r["accuracy"]),
                reviewed_clips=int(r["reviewed_clips"]),
                reviewed_correct=int(r["reviewed_correct"]),
                recall=dict(sorted(recall[(_day(r["day"]), r["model_version"])].items())),
            )
            for r in self._rows(
                "SELECT day, model_version, labelled_clips, correct, accuracy, reviewed_clips,"
                " reviewed_correct FROM model_accuracy_daily",
                window,
            )
        ]

    def prediction_drift(self, days: int = 30, *, until: date | None = None) -> list[DriftDay]:
        """Per day and model version (versions with a training record), oldest first."""
        return [
            DriftDay(
                day=_day(r["day"]),
                model_version=r["model_version"],
                clips=int(r["clips"]),
                classes=int(r["classes"]),
                psi=float(r["psi"]),
                psi_threshold=float(r["psi_threshold"]),
                drifted=bool(r["drifted"]),
            )
            for r in self._rows(
                "SELECT day, model_version, clips, classes, psi, psi_threshold, drifted"
                " FROM prediction_drift",
                self._window(days, until),
            )
        ]

    def confidence_daily(self, days: int = 30, *, until: date | None = None) -> list[ConfidenceDay]:
        """Per day and model version, oldest first."""
        return [
            ConfidenceDay(
                day=_day(r["day"]),
                model_version=r["model_version"],
                clips=int(r["clips"]),
                mean_confidence=float(r["mean_confidence"]),
                p10=float(r["p10"]),
                p50=float(r["p50"]),
                p90=float(r["p90"]),
                below_review_threshold=int(r["below_review_threshold"]),
                review_threshold=float(r["review_threshold"]),
            )
            for r in self._rows(
                "SELECT day, model_version, clips, mean_confidence, p10, p50, p90,"
                " below_review_threshold, review_threshold FROM confidence_daily",
                self._window(days, until),
            )
        ]

    def quarantine_daily(self, days: int = 30, *, until: date | None = None) -> list[QuarantineDay]:
        """Per day and reason, oldest first."""
        return [
            QuarantineDay(_day(r["day"]), r["reason"], int(r["files"]), int(r["ingested"]))
            for r in self._rows(
                "SELECT day, reason, files, ingested FROM quarantine_daily",
                self._window(days, until),
                order="day, reason",
            )
        ]

    def scored_per_day(self, days: int = 30, *, until: date | None = None) -> list[ScoredDay]:
        """Clips scored per day, model version and predicted label, oldest first."""
        return [
            ScoredDay(
                day=_day(r["day"]),
                model_version=r["model_version"],
                predicted_label=r["predicted_label"],
                clips=int(r["clips"]),
                mean_confidence=float(r["mean_confidence"]),
            )
            for r in self._rows(
                "SELECT day, model_version, predicted_label, clips, mean_confidence"
                " FROM daily_label_counts",
                self._window(days, until),
                order="day, model_version, predicted_label",
            )
        ]

    def review_queue(self, limit: int = 100) -> list[ReviewItem]:
        """The first ``limit`` clips a person should label, most recently scored first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT clip_id, model_version, predicted_label, confidence, probabilities,"
                    " scored_at, uri, modality, true_label, label_source FROM review_queue"
                    " ORDER BY scored_at DESC, clip_id LIMIT :n"
                ),
                {"n": max(0, int(limit))},
            )
            return [
                ReviewItem(
                    **{
                        **r._mapping,
                        "confidence": float(r.confidence),
                        "probabilities": json.loads(r.probabilities),
                        "scored_at": as_datetime(r.scored_at),
                    }
                )
                for r in rows
            ]

    def segment_timeline(self, clip_id: str) -> list[SegmentLabel]:
        """The production model's labels of ``clip_id``'s segments in time order (empty for a
        clip scored as one segment)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT clip_id, model_version, segment_index, n_segments, start_seconds,"
                    " end_seconds, predicted_label, confidence FROM segment_timeline"
                    " WHERE clip_id = :c ORDER BY segment_index"
                ),
                {"c": clip_id},
            )
            return [SegmentLabel(**r._mapping) for r in rows]

    def _window(self, days: int, until: date | None) -> dict[str, Any]:
        """Bind values for ``day > :since AND day <= :until``. SQLite's DATE() is text, so it
        gets ISO strings; PostgreSQL gets dates."""
        last = until if until is not None else datetime.now(UTC).date()
        first = last - timedelta(days=max(1, int(days)))
        if self.dialect == "sqlite":
            return {"since": first.isoformat(), "until": last.isoformat()}
        return {"since": first, "until": last}

    def _rows(
        self, select: str, window: Mapping[str, Any], order: str = "day, model_version"
    ) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            result = conn.execute(
                sa.text(f"{select} WHERE day > :since AND day <= :until ORDER BY {order}"),
                dict(window),
            )
            return [dict(r._mapping) for r in result]


def _day(value: Any) -> date:
    """A view's ``day`` column as a date (SQLite's DATE() is text)."""
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else date.fromisoformat(str(value))
