"""The analyst views' cost grows with the predictions they read, not with predictions times
feedback rows: SQLite once scanned every reviewer label for every prediction (sql/010)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from pipeline.warehouse.database import Warehouse

CLIPS = 1500


def _warehouse(path: Path, feedback: int) -> Warehouse:
    """A SQLite warehouse: CLIPS labelled clips scored by a production model, ``feedback`` of
    them relabelled by a reviewer."""
    wh = Warehouse.connect(f"sqlite:///{path}")
    now = datetime.now(UTC)
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(CLIPS)]
    with wh.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO media_files (clip_id, uri, label, label_source, split, status,"
                " size_bytes, ingested_at, updated_at)"
                " VALUES (:c, :c, 'a', 'ingest', 'test', 'ok', 1, :t, :t)"
            ),
            [{"c": c, "t": now} for c in ids],
        )
        conn.execute(
            sa.text(
                "INSERT INTO label_feedback (id, clip_id, label, reviewer, created_at)"
                " VALUES (:i, :c, 'b', 'ana', :t)"
            ),
            [{"i": i + 1, "c": c, "t": now} for i, c in enumerate(ids[:feedback])],
        )
    wh.register_model(
        model_version="v0001",
        model_uri="/m",
        settings_hash="h",
        fingerprint="f",
        class_names=["a", "b"],
        metrics={},
        streams=["video"],
    )
    wh.promote_model("v0001")
    wh.upsert_predictions(
        {
            "clip_id": c,
            "model_version": "v0001",
            "predicted_label": "a",
            "confidence": 0.9,
            "probabilities": {"a": 0.9, "b": 0.1},
            "scored_at": now,
            "run_id": "r",
            "logical_date": now,
        }
        for c in ids
    )
    return wh


def _vm_steps(wh: Warehouse, sql: str) -> int:
    """Thousands of SQLite virtual-machine instructions ``sql`` takes: a measure of work that,
    unlike time, does not depend on what else runs on the machine."""
    ticks = [0]

    def tick() -> int:
        ticks[0] += 1
        return 0

    with wh.engine.connect() as conn:
        raw = conn.connection.driver_connection
        raw.set_progress_handler(tick, 1000)  # type: ignore[union-attr]
        try:
            conn.execute(sa.text(sql)).fetchall()
        finally:
            raw.set_progress_handler(None, 1000)  # type: ignore[union-attr]
    return ticks[0]


def test_views_reading_effective_labels_do_not_scan_the_feedback_per_prediction(
    tmp_path: Path,
) -> None:
    few = _warehouse(tmp_path / "few.db", feedback=5)
    many = _warehouse(tmp_path / "many.db", feedback=CLIPS // 2)
    for view in ("model_accuracy_daily", "production_predictions", "review_queue"):
        sql = f"SELECT COUNT(*) FROM (SELECT * FROM {view}) t"
        steps_few, steps_many = _vm_steps(few, sql), _vm_steps(many, sql)
        # Linear: 150 times the feedback costs at most twice the work (it was ~100 times).
        assert steps_many < 2 * steps_few + 50, (view, steps_few, steps_many)
    few.dispose()
    many.dispose()
