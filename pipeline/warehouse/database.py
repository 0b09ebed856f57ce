"""The SQL warehouse: :class:`Warehouse`, composed of one part per group of tables.

Where each statement lives: :mod:`~pipeline.warehouse.connection` (engine, migrations),
:mod:`~pipeline.warehouse.catalog` (``media_files``, ``media_sources``),
:mod:`~pipeline.warehouse.models` (``model_versions``, reservations),
:mod:`~pipeline.warehouse.predictions` (``predictions``, ``segment_predictions``),
:mod:`~pipeline.warehouse.work_claims` (``work_claims``), :mod:`~pipeline.warehouse.reports`
(summaries), :mod:`~pipeline.warehouse.daily_report` (the daily report's scoring runs),
:mod:`~pipeline.warehouse.feedback` (``label_feedback``, ``analyst_settings``),
:mod:`~pipeline.warehouse.analytics` (the analyst views) and
:mod:`~pipeline.warehouse.roles` (PostgreSQL login roles). Writes are upserts on natural keys,
so re-running a stage replaces rows rather than adding them.
"""

from __future__ import annotations

from pipeline.warehouse.analytics import AnalyticsSql
from pipeline.warehouse.catalog import CatalogSql, ClipRecord
from pipeline.warehouse.connection import split_sql, sql_dir, utc_now
from pipeline.warehouse.daily_report import DailyReportSql
from pipeline.warehouse.feedback import FeedbackItem, FeedbackRecord, FeedbackSql
from pipeline.warehouse.models import ModelRecord, ModelsSql
from pipeline.warehouse.predictions import PredictionsSql
from pipeline.warehouse.reports import ReportsSql
from pipeline.warehouse.roles import ANALYST_ROLE, WRITER_ROLE, RolesSql
from pipeline.warehouse.work_claims import WorkClaimsSql, as_datetime

__all__ = [
    "ANALYST_ROLE",
    "WRITER_ROLE",
    "ClipRecord",
    "FeedbackItem",
    "FeedbackRecord",
    "ModelRecord",
    "Warehouse",
    "as_datetime",
    "split_sql",
    "sql_dir",
    "utc_now",
]


class Warehouse(
    CatalogSql,
    ModelsSql,
    PredictionsSql,
    WorkClaimsSql,
    ReportsSql,
    DailyReportSql,
    RolesSql,
    FeedbackSql,
    AnalyticsSql,
):
    """All SQL the pipeline runs, each statement behind a named method. Construct with
    :meth:`connect`: ``with Warehouse.connect(url) as warehouse: warehouse.clips()``."""
