"""Reviewers' labels: ``label_feedback`` (append-only) and the analyst thresholds the views read
(``analyst_settings``).

A clip's effective label is its latest feedback label, else its ingest label (view
``clip_labels``); :meth:`~pipeline.warehouse.catalog.CatalogSql.clips` returns it, so training
and evaluation use reviewers' corrections.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline.errors import ConfigError, InfrastructureError
from pipeline.labels import label_problem
from pipeline.warehouse.connection import WarehouseConnection, utc_now
from pipeline.warehouse.work_claims import as_datetime

#: Shortest clip-id prefix accepted for a clip (a clip id is 64 hex digits).
MIN_CLIP_PREFIX = 8


@dataclass(frozen=True)
class FeedbackRecord:
    """A row of ``label_feedback``: ``label`` replaces ``previous_label`` (the clip's effective
    label before it; None if it had none) as the clip's effective label."""

    id: int
    clip_id: str
    label: str
    previous_label: str | None
    reviewer: str
    note: str | None
    created_at: datetime


@dataclass(frozen=True)
class FeedbackItem:
    """One label to record. ``where`` names its origin in error messages (e.g. ``labels.csv,
    line 7``); ``clip_id`` may be a unique prefix of at least 8 characters."""

    clip_id: str
    label: str
    reviewer: str
    note: str | None = None
    where: str = ""


class FeedbackSql(WarehouseConnection):
    """Recording and counting reviewers' labels; the thresholds the views compare with."""

    def add_feedback(
        self, clip_id: str, label: str, *, reviewer: str, note: str | None = None
    ) -> FeedbackRecord:
        """Record ``label`` as the clip's label from now on (``clip_id`` may be a unique prefix
        of at least 8 characters).

        Raises:
            ConfigError: the clip is unknown (or the prefix ambiguous), the label is invalid
                (:data:`pipeline.labels.LABEL_RULE`) or the reviewer is empty.
        """
        [record] = self.add_feedback_batch([FeedbackItem(clip_id, label, reviewer, note)])
        return record

    def add_feedback_batch(self, items: Sequence[FeedbackItem]) -> list[FeedbackRecord]:
        """Record every item, in order, in one transaction: all or nothing. Each item is checked
        as :meth:`add_feedback` does; the first bad one raises :class:`ConfigError` prefixed
        with its ``where`` and nothing is written. An item's ``previous_label`` is the clip's
        effective label just before it (an earlier item of the same batch included)."""
        for _attempt in range(20):
            # Two reviewers at once may take the same id (MAX + 1): the loser retries.
            with contextlib.suppress(sa.exc.IntegrityError), self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    # Serialise writers only; readers (SELECT) are not blocked by this mode.
                    conn.execute(sa.text("LOCK TABLE label_feedback IN SHARE ROW EXCLUSIVE MODE"))
                return [_insert(conn, item, utc_now()) for item in items]
        raise InfrastructureError(
            "could not record the labels after 20 attempts (too many reviewers writing at "
            "once?); run the command again"
        )

    def feedback_count_since(self, when: datetime | None) -> int:
        """Feedback rows recorded after ``when`` (all of them if None), e.g. since the newest
        model version was created: the labels that model has not learnt from."""
        sql, params = "SELECT COUNT(*) FROM label_feedback", {}
        if when is not None:
            sql += " WHERE created_at > :t"
            params["t"] = as_datetime(when).astimezone(UTC)
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text(sql), params).scalar_one())

    def feedback(self, clip_id: str | None = None) -> list[FeedbackRecord]:
        """Every feedback row (of one clip, if given) in the order recorded."""
        where, params = ("WHERE clip_id = :c", {"c": clip_id}) if clip_id else ("", {})
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT id, clip_id, label, previous_label, reviewer, note, created_at"
                    f" FROM label_feedback {where} ORDER BY id"
                ),
                params,
            )
            return [_record(r._mapping) for r in rows]

    def set_analyst_settings(self, *, review_threshold: float, drift_psi_threshold: float) -> None:
        """Copy the thresholds the views compare with into ``analyst_settings`` (views cannot
        read the pipeline's settings). Upserts; unchanged values are left as they are."""
        values = {"review_threshold": review_threshold, "drift_psi_threshold": drift_psi_threshold}
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO analyst_settings (name, value, updated_at) VALUES (:n, :v, :t)"
                    " ON CONFLICT (name) DO UPDATE SET value = excluded.value,"
                    " updated_at = excluded.updated_at"
                    " WHERE analyst_settings.value <> excluded.value"
                ),
                [{"n": n, "v": float(v), "t": utc_now()} for n, v in sorted(values.items())],
            )

    def analyst_settings(self) -> dict[str, float]:
        """The thresholds the views use now, by name."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT name, value FROM analyst_settings"))
            return {r.name: float(r.value) for r in rows}


def _insert(conn: Connection, item: FeedbackItem, now: datetime) -> FeedbackRecord:
    where = f"{item.where}: " if item.where else ""
    if (problem := label_problem(item.label)) is not None:
        raise ConfigError(f"{where}{problem}")
    reviewer = item.reviewer.strip()
    if not reviewer:
        raise ConfigError(f"{where}the reviewer's name is empty; give one with --by NAME")
    clip_id, previous = _resolve_clip(conn, item.clip_id, where)
    note = item.note or None
    params = {
        "c": clip_id,
        "l": item.label,
        "p": previous,
        "r": reviewer,
        "n": note,
        "t": now,
    }
    new_id = conn.execute(
        sa.text(
            "INSERT INTO label_feedback"
            " (id, clip_id, label, previous_label, reviewer, note, created_at)"
            " SELECT COALESCE(MAX(id), 0) + 1, :c, :l, :p, :r, :n, :t FROM label_feedback"
            " RETURNING id"
        ),
        params,
    ).scalar_one()
    return FeedbackRecord(int(new_id), clip_id, item.label, previous, reviewer, note, now)


def _resolve_clip(conn: Connection, clip_id: str, where: str) -> tuple[str, str | None]:
    """(full clip id, its effective label) of ``clip_id`` or of the one clip it prefixes."""
    given = clip_id.strip().lower()
    rows = conn.execute(
        sa.text("SELECT clip_id, label FROM clip_labels WHERE clip_id = :c"), {"c": given}
    ).all()
    if not rows and len(given) >= MIN_CLIP_PREFIX and given.isalnum():
        rows = conn.execute(
            sa.text(
                "SELECT clip_id, label FROM clip_labels WHERE clip_id LIKE :p"
                " ORDER BY clip_id LIMIT 2"
            ),
            {"p": given + "%"},
        ).all()
    shown = given if len(given) <= 70 else given[:70] + "..."
    if not rows:
        hint = (
            f" (a prefix needs at least {MIN_CLIP_PREFIX} characters)"
            if len(given) < MIN_CLIP_PREFIX
            else ""
        )
        raise ConfigError(
            f"{where}no clip {shown!r} in the warehouse{hint}; `stpipe status` counts the clips, "
            "and the views production_predictions and review_queue list their ids"
        )
    if len(rows) > 1:
        raise ConfigError(
            f"{where}{shown!r} is the start of more than one clip id ({rows[0].clip_id}, "
            f"{rows[1].clip_id}, ...); give more characters"
        )
    return str(rows[0].clip_id), rows[0].label


def _record(row: Any) -> FeedbackRecord:
    values = dict(row)
    values["id"] = int(values["id"])
    values["created_at"] = as_datetime(values["created_at"])
    return FeedbackRecord(**values)
