"""What the daily report shows, collected from the warehouse's named methods (the rows of the
analyst views, :mod:`pipeline.warehouse.analytics`) into one typed value,
:class:`DailyReportData`, so that rendering (:mod:`pipeline.reporting.html`) needs no database
and can be tested with hand-made data.

Every series covers the ``days`` days ending on the report's day, inclusive. Days are calendar
days in UTC; confidences, accuracies and PSI are fractions, not percentages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta

from pipeline import storage
from pipeline.config import Settings, join_uri
from pipeline.warehouse.analytics import (
    AccuracyDay,
    ConfidenceDay,
    DriftDay,
    QuarantineDay,
    ReviewItem,
    ScoredDay,
)
from pipeline.warehouse.daily_report import ScoringRunRecord
from pipeline.warehouse.database import ModelRecord, Warehouse

#: Days each plot covers, ending on the report's day.
REPORT_DAYS = 30
#: Rows of the review queue and scoring runs the page lists.
REVIEW_ROWS = 20
RUNS = 5
#: Files a model card may embed: plain names in its own version folder, nothing else.
_CARD_IMAGE = re.compile(r"^[A-Za-z0-9_.-]+\.png$")


@dataclass(frozen=True)
class ModelCard:
    """The production model's ``MODEL_CARD.md`` (None when its folder has none) and the PNG
    files it refers to, read from its version folder."""

    model_version: str
    markdown: str | None
    images: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class DailyReportData:
    """Everything the daily report page shows, for the ``days`` days ending on ``day``."""

    day: date
    review_threshold: float
    drift_threshold: float
    days: int = REPORT_DAYS
    scored: tuple[ScoredDay, ...] = ()
    confidence: tuple[ConfidenceDay, ...] = ()
    drift: tuple[DriftDay, ...] = ()
    accuracy: tuple[AccuracyDay, ...] = ()
    quarantine: tuple[QuarantineDay, ...] = ()
    review_queue: tuple[ReviewItem, ...] = ()
    runs: tuple[ScoringRunRecord, ...] = ()
    model: ModelCard | None = None

    @property
    def first_day(self) -> date:
        return self.day - timedelta(days=self.days - 1)

    @property
    def is_empty(self) -> bool:
        """Nothing scored, quarantined or trained yet: the page says so."""
        return not (self.scored or self.quarantine or self.runs or self.model)


def collect_daily_report(
    warehouse: Warehouse, settings: Settings, day: date, *, days: int = REPORT_DAYS
) -> DailyReportData:
    """Read the report for the ``days`` days ending on ``day`` from the warehouse's named
    methods and the production model's version folder."""
    production = warehouse.production_model()
    return DailyReportData(
        day=day,
        days=days,
        review_threshold=settings.review_threshold,
        drift_threshold=settings.drift_psi_threshold,
        scored=tuple(warehouse.scored_per_day(days, until=day)),
        confidence=tuple(warehouse.confidence_daily(days, until=day)),
        drift=tuple(warehouse.prediction_drift(days, until=day)),
        accuracy=tuple(warehouse.accuracy_daily(days, until=day)),
        quarantine=tuple(warehouse.quarantine_daily(days, until=day)),
        review_queue=tuple(warehouse.review_queue(limit=REVIEW_ROWS)),
        runs=tuple(warehouse.recent_scoring_runs(until=day + timedelta(days=1), limit=RUNS)),
        model=None if production is None else read_model_card(production),
    )


def read_model_card(record: ModelRecord) -> ModelCard:
    """The version folder's ``MODEL_CARD.md`` and the PNG files it links to (missing files are
    left out: a version registered before cards existed has none)."""
    card_uri = join_uri(record.model_uri, "MODEL_CARD.md")
    if not storage.exists(card_uri):
        return ModelCard(record.model_version, None)
    markdown = storage.read_bytes(card_uri).decode("utf-8", errors="replace")
    images: dict[str, bytes] = {}
    for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown):
        uri = join_uri(record.model_uri, name)
        if _CARD_IMAGE.match(name) and storage.exists(uri):
            images[name] = storage.read_bytes(uri)
    return ModelCard(record.model_version, markdown, images)


_REPORT_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})\.html$")


def write_daily_report(page: str, out: str, day: date) -> str:
    """Write ``page`` as ``out/YYYY-MM-DD.html`` and, unless a later day's report is already
    there (a backfill), as ``out/latest.html``; each file atomically (local or object store).
    Returns the day's file."""
    uri = join_uri(out, f"{day.isoformat()}.html")
    data = page.encode("utf-8")
    storage.write_bytes(uri, data)
    days = [
        date.fromisoformat(m.group(1))
        for f in storage.list_files(out)
        if (m := _REPORT_NAME.search(f))
    ]
    if day >= max(days, default=day):
        storage.write_bytes(join_uri(out, "latest.html"), data)
    return uri
