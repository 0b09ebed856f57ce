"""The analyst views (migrations 008 and 009) on SQLite and PostgreSQL, with real rows: effective
labels, the production model's answers, accuracy on clips a model never learnt from, drift,
confidence, quarantine, segments and the review queue."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from pipeline.warehouse.analytics import QuarantineDay, ScoredDay
from pipeline.warehouse.connection import migration_statements
from pipeline.warehouse.database import Warehouse
from tests.unit.test_warehouse import _clip, _prediction, _register

DAY1 = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
UNTIL = date(2026, 11, 28)
VIEWS = (
    "clip_labels",
    "production_predictions",
    "latest_predictions",
    "low_confidence_predictions",
    "daily_label_counts",
    "model_evaluations",
    "model_accuracy_daily",
    "model_recall_daily",
    "prediction_drift_classes",
    "prediction_drift",
    "confidence_daily",
    "quarantine_daily",
    "segment_timeline",
    "review_queue",
)


def _trained(wh: Warehouse, version: str, labels: dict[str, str], split: str = "train") -> None:
    """Register ``version`` as trained on ``labels`` (clip id -> label) of ``split``."""
    wh.record_training_clips(version, [(c, split, label) for c, label in labels.items()])
    _register(wh, version)


def test_every_view_exists_and_answers_on_an_empty_warehouse(warehouse: Warehouse) -> None:
    for view in VIEWS:
        assert warehouse.query(f"SELECT * FROM {view}") == [], view
    assert warehouse.analyst_settings() == {"review_threshold": 0.6, "drift_psi_threshold": 0.2}


def test_effective_label_is_the_latest_feedback_else_the_ingest_label(
    warehouse: Warehouse,
) -> None:
    warehouse.add_clip(_clip("c-folder", label="a"))
    warehouse.add_clip(_clip("c-manifest", label="b", label_source="manifest"))
    warehouse.add_clip(_clip("c-none"))
    sources = {c.clip_id: (c.label, c.label_source) for c in warehouse.clips()}
    assert sources == {
        "c-folder": ("a", "ingest"),
        "c-manifest": ("b", "manifest"),
        "c-none": (None, None),
    }

    first = warehouse.add_feedback("c-folder", "b", reviewer="ana", note="it barks")
    assert (first.previous_label, first.label, first.reviewer, first.note) == (
        "a",
        "b",
        "ana",
        "it barks",
    )
    second = warehouse.add_feedback("c-folder", "c", reviewer="bo")
    assert second.previous_label == "b" and second.id > first.id
    labelled = warehouse.add_feedback("c-none", "a", reviewer="ana")
    assert labelled.previous_label is None

    clips = {c.clip_id: c for c in warehouse.clips(labelled=True)}
    assert set(clips) == {"c-folder", "c-manifest", "c-none"}
    assert (clips["c-folder"].label, clips["c-folder"].label_source) == ("c", "feedback")
    assert (clips["c-none"].label, clips["c-none"].label_source) == ("a", "feedback")
    assert warehouse.clips(labelled=False) == []
    got = warehouse.get_clip("c-folder")
    assert got is not None and got.label == "c"
    # The ingest label itself is never rewritten: the history stays in label_feedback.
    [row] = warehouse.query(
        "SELECT label, label_source FROM media_files WHERE clip_id = 'c-folder'"
    )
    assert row == {"label": "a", "label_source": "ingest"}
    assert [f.label for f in warehouse.feedback("c-folder")] == ["b", "c"]

    _register(warehouse, "v0001")
    warehouse.promote_model("v0001")
    warehouse.upsert_predictions(
        [_prediction(c, "v0001", "a", 0.9, DAY1) for c in ("c-folder", "c-manifest", "c-none")]
    )
    rows = warehouse.query(
        "SELECT clip_id, true_label, label_source FROM production_predictions ORDER BY clip_id"
    )
    assert [(r["clip_id"], r["true_label"], r["label_source"]) for r in rows] == [
        ("c-folder", "c", "feedback"),
        ("c-manifest", "b", "manifest"),
        ("c-none", "a", "feedback"),
    ]


def test_feedback_is_append_only(warehouse: Warehouse) -> None:
    warehouse.add_clip(_clip("c1", label="a"))
    warehouse.add_feedback("c1", "b", reviewer="ana")
    for statement in ("UPDATE label_feedback SET label = 'x'", "DELETE FROM label_feedback"):
        with (
            pytest.raises(sa.exc.DatabaseError, match="append-only"),
            warehouse.engine.begin() as conn,
        ):
            conn.execute(sa.text(statement))
    assert [f.label for f in warehouse.feedback()] == ["b"]


def test_review_queue_holds_unreviewed_production_predictions_below_the_threshold(
    warehouse: Warehouse,
) -> None:
    for clip_id in ("low-old", "low-new", "sure", "reviewed"):
        warehouse.add_clip(_clip(clip_id))
    _register(warehouse, "v0001")
    _register(warehouse, "v0002")
    warehouse.promote_model("v0001")
    warehouse.upsert_predictions(
        [
            _prediction("low-old", "v0001", "a", 0.55, DAY1),
            _prediction("low-new", "v0001", "b", 0.51, DAY2),
            _prediction("sure", "v0001", "a", 0.95, DAY2),
            _prediction("reviewed", "v0001", "a", 0.4, DAY2),
            _prediction("sure", "v0002", "b", 0.3, DAY2),  # not production
        ]
    )
    warehouse.add_feedback("reviewed", "b", reviewer="ana")
    queue = warehouse.review_queue()
    assert [(q.clip_id, q.model_version) for q in queue] == [
        ("low-new", "v0001"),
        ("low-old", "v0001"),
    ]
    assert queue[0].probabilities == {"b": 0.51, "a": pytest.approx(0.49)}
    assert queue[0].true_label is None and queue[0].scored_at == DAY2
    assert [q.clip_id for q in warehouse.review_queue(limit=1)] == ["low-new"]
    low = warehouse.query("SELECT clip_id FROM low_confidence_predictions ORDER BY clip_id")
    assert [r["clip_id"] for r in low] == ["low-new", "low-old", "reviewed"]

    # The threshold is the pipeline's setting, copied where the views read it.
    warehouse.set_analyst_settings(review_threshold=0.52, drift_psi_threshold=0.2)
    assert [q.clip_id for q in warehouse.review_queue()] == ["low-new"]
    # Rolling forward to v0002: the queue follows production.
    warehouse.promote_model("v0002")
    assert [(q.clip_id, q.model_version) for q in warehouse.review_queue()] == [("sure", "v0002")]


def test_accuracy_counts_only_clips_the_model_never_learnt_from_with_effective_labels(
    warehouse: Warehouse,
) -> None:
    labels = {"t1": "a", "t2": "b", "h1": "a", "h2": "a", "h3": "b", "h4": "b", "u1": None}
    for clip_id, label in labels.items():
        warehouse.add_clip(_clip(clip_id, label=label))
    _trained(warehouse, "v0001", {"t1": "a", "t2": "b"})
    warehouse.record_training_clips("v0001", [("h4", "test", "b")])  # a test clip: held out
    predicted = {"t1": "a", "t2": "a", "h1": "a", "h2": "b", "h3": "b", "h4": "a", "u1": "a"}
    warehouse.upsert_predictions(
        [_prediction(c, "v0001", label, 0.8, DAY1) for c, label in predicted.items()]
    )
    [day] = warehouse.accuracy_daily(until=UNTIL)
    assert (day.day, day.model_version, day.labelled_clips, day.correct) == (
        date(2026, 11, 27),
        "v0001",
        4,
        2,
    )
    assert day.accuracy == pytest.approx(0.5) and day.reviewed_clips == 0
    assert day.recall == {"a": pytest.approx(0.5), "b": pytest.approx(0.5)}

    # A reviewer says h4 is an 'a': the model was right after all.
    warehouse.add_feedback("h4", "a", reviewer="ana")
    [day] = warehouse.accuracy_daily(until=UNTIL)
    assert (day.correct, day.reviewed_clips, day.reviewed_correct) == (3, 1, 1)
    assert day.recall == {"a": pytest.approx(2 / 3), "b": pytest.approx(1.0)}
    assert warehouse.accuracy_daily(days=1, until=UNTIL) == []  # only 2026-11-28


def test_prediction_drift_flags_a_day_far_from_the_training_distribution(
    warehouse: Warehouse,
) -> None:
    for i in range(8):
        warehouse.add_clip(_clip(f"c{i}"))
    _trained(warehouse, "v0001", {"c0": "a", "c1": "a", "c2": "b", "c3": "b"})
    warehouse.upsert_predictions(
        [_prediction(f"c{i}", "v0001", "a", 0.9, DAY1) for i in range(4)]
        + [_prediction(f"c{i}", "v0001", "a" if i < 6 else "b", 0.9, DAY2) for i in range(4, 8)]
    )
    day1, day2 = warehouse.prediction_drift(until=UNTIL)
    # Day 1: every clip 'a' against a 50/50 training split; 'b' is empty (floored at 1e-4).
    expected = 0.5 * math.log(2) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)
    assert (day1.day, day1.clips, day1.classes) == (date(2026, 11, 27), 4, 2)
    assert day1.psi == pytest.approx(expected) and day1.drifted
    assert day2.psi == pytest.approx(0.0, abs=1e-12) and not day2.drifted
    assert day2.psi_threshold == 0.2
    warehouse.set_analyst_settings(review_threshold=0.6, drift_psi_threshold=10.0)
    assert not any(d.drifted for d in warehouse.prediction_drift(until=UNTIL))
    shares = warehouse.query(
        "SELECT label, predicted_share, training_share FROM prediction_drift_classes"
        " WHERE model_version = 'v0001' ORDER BY day, label"
    )
    assert [(r["label"], r["predicted_share"], r["training_share"]) for r in shares] == [
        ("a", 1.0, 0.5),
        ("b", 0.0, 0.5),
        ("a", 0.5, 0.5),
        ("b", 0.5, 0.5),
    ]


def test_confidence_quantiles_and_count_below_the_review_threshold(warehouse: Warehouse) -> None:
    confidences = [0.35, 0.45, 0.55, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    for i in range(len(confidences)):
        warehouse.add_clip(_clip(f"c{i}"))
    _register(warehouse, "v0001")
    warehouse.upsert_predictions(
        [_prediction(f"c{i}", "v0001", "a", c, DAY2) for i, c in enumerate(confidences)]
    )
    [day] = warehouse.confidence_daily(until=UNTIL)
    assert (day.day, day.clips, day.below_review_threshold) == (date(2026, 11, 28), 10, 3)
    # Nearest rank: the 1st, 5th and 9th of 10.
    assert (day.p10, day.p50, day.p90) == (0.35, 0.7, 0.9)
    assert day.mean_confidence == pytest.approx(sum(confidences) / 10)
    assert day.review_threshold == 0.6


def test_quarantine_daily_counts_files_per_reason_and_day(warehouse: Warehouse) -> None:
    warehouse.add_clip(_clip("ok1"))
    warehouse.add_clip(_clip("q1", status="quarantined", error="no streams"))
    warehouse.add_clip(_clip("q2", status="quarantined", error="no streams"))
    warehouse.add_clip(_clip("q3"))
    warehouse.quarantine_clip("q3", "decode failed")
    today = datetime.now(UTC).date()
    assert warehouse.quarantine_daily() == [
        QuarantineDay(today, "decode failed", files=1, ingested=4),
        QuarantineDay(today, "no streams", files=2, ingested=4),
    ]


def test_segment_timeline_shows_the_production_models_segments_in_time_order(
    warehouse: Warehouse,
) -> None:
    warehouse.add_clip(_clip("long"))
    warehouse.add_clip(_clip("short"))
    _register(warehouse, "v0001")
    _register(warehouse, "v0002")
    warehouse.promote_model("v0001")

    def segment(clip: str, version: str, index: int, n: int, label: str) -> dict[str, Any]:
        row = _prediction(clip, version, label, 0.8, DAY1)
        extra = {"segment_index": index, "n_segments": n}
        return {**row, **extra, "start_seconds": 10.0 * index, "end_seconds": 10.0 * index + 10}

    warehouse.upsert_segment_predictions(
        [
            segment("long", "v0001", 2, 3, "a"),
            segment("long", "v0001", 0, 3, "b"),
            segment("long", "v0001", 1, 3, "a"),
            segment("long", "v0002", 0, 3, "a"),
            segment("short", "v0001", 0, 1, "a"),
        ]
    )
    timeline = warehouse.segment_timeline("long")
    assert [
        (s.segment_index, s.start_seconds, s.end_seconds, s.predicted_label) for s in timeline
    ] == [
        (0, 0.0, 10.0, "b"),
        (1, 10.0, 20.0, "a"),
        (2, 20.0, 30.0, "a"),
    ]
    assert {s.model_version for s in timeline} == {"v0001"}
    assert warehouse.segment_timeline("short") == []
    warehouse.promote_model("v0002")
    assert [s.model_version for s in warehouse.segment_timeline("long")] == ["v0002"]


def test_scored_per_day_counts_clips_and_labels(warehouse: Warehouse) -> None:
    for clip_id in ("c1", "c2", "c3"):
        warehouse.add_clip(_clip(clip_id))
    _register(warehouse, "v0001")
    warehouse.upsert_predictions(
        [
            _prediction("c1", "v0001", "a", 0.9, DAY1),
            _prediction("c2", "v0001", "a", 0.7, DAY1),
            _prediction("c3", "v0001", "b", 0.6, DAY2),
        ]
    )
    assert warehouse.scored_per_day(until=UNTIL) == [
        ScoredDay(date(2026, 11, 27), "v0001", "a", 2, pytest.approx(0.8)),  # type: ignore[arg-type]
        ScoredDay(date(2026, 11, 28), "v0001", "b", 1, pytest.approx(0.6)),  # type: ignore[arg-type]
    ]


def test_migrations_run_comments_and_tagged_statements_only_where_they_apply() -> None:
    script = (
        "CREATE TABLE t (x INT);\n"
        "COMMENT ON TABLE t IS 'doc; with a semicolon';\n"
        "-- only: sqlite\n"
        "CREATE TRIGGER a BEFORE DELETE ON t\n"
        "BEGIN SELECT RAISE(ABORT, 'no'); END;\n"
        "-- only: postgresql\n"
        "CREATE RULE r AS ON DELETE TO t DO INSTEAD NOTHING;\n"
        "CREATE INDEX i ON t (x);\n"
    )
    sqlite = list(migration_statements(script, "sqlite"))
    postgresql = list(migration_statements(script, "postgresql"))
    assert sqlite == [
        "CREATE TABLE t (x INT)",
        "CREATE TRIGGER a BEFORE DELETE ON t\nBEGIN SELECT RAISE(ABORT, 'no'); END",
        "CREATE INDEX i ON t (x)",
    ]
    assert postgresql == [
        "CREATE TABLE t (x INT)",
        "COMMENT ON TABLE t IS 'doc; with a semicolon'",
        "CREATE RULE r AS ON DELETE TO t DO INSTEAD NOTHING",
        "CREATE INDEX i ON t (x)",
    ]


@pytest.mark.postgres
def test_postgresql_documents_every_view(postgres_url: str) -> None:
    with Warehouse.connect(postgres_url) as wh:
        rows = wh.query(
            "SELECT c.relname, obj_description(c.oid, 'pg_class') AS doc FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind = 'v'"
        )
        docs = {r["relname"]: r["doc"] for r in rows}
        assert all(docs.get(view) for view in VIEWS if view != "daily_label_counts"), docs
        [column] = wh.query(
            "SELECT col_description('production_predictions'::regclass, a.attnum) AS doc"
            " FROM pg_attribute a WHERE a.attrelid = 'production_predictions'::regclass"
            " AND a.attname = 'label_source'"
        )
        assert "feedback" in column["doc"]
