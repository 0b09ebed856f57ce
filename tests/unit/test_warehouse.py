"""The same schema and SQL on embedded SQLite and on the PostgreSQL server."""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ConfigError
from pipeline.warehouse import connection
from pipeline.warehouse.database import Warehouse, split_sql, sql_dir
from pipeline.warehouse.reports import ClipTally, HeldOutScore, LabelTally


def _clip(clip_id: str, **extra: Any) -> dict[str, Any]:
    row = {
        "clip_id": clip_id,
        "uri": f"/landing/{clip_id}.mp4",
        "media_uri": f"/media/{clip_id}.mp4",
        "modality": "video",
        "label": None,
        "split": "train",
        "status": "ok",
        "error": None,
        "size_bytes": 100,
        "duration_seconds": 2.0,
    }
    row.update(extra)
    return row


def _register(wh: Warehouse, version: str, classes: list[str] | None = None) -> None:
    wh.register_model(
        model_version=version,
        model_uri=f"/models/{version}",
        settings_hash="h",
        fingerprint=f"f-{version}",
        class_names=classes or ["a", "b"],
        metrics={"accuracy": 0.9},
        streams=["video"],
    )


def test_migrations_apply_once_in_order(warehouse: Warehouse) -> None:
    files = sorted(p.name for p in sql_dir().glob("*.sql"))
    rows = warehouse.query("SELECT version, name FROM schema_migrations ORDER BY version")
    assert [r["name"] for r in rows] == files
    assert warehouse.migrate() == []  # second time: nothing to do


def test_add_clip_is_insert_if_absent(warehouse: Warehouse) -> None:
    assert warehouse.add_clip(_clip("c1"))
    assert not warehouse.add_clip(_clip("c1", label="other"))
    clip = warehouse.get_clip("c1")
    assert clip is not None and clip.label is None and clip.modality == "video"
    assert warehouse.set_label_if_missing("c1", "cat")
    assert not warehouse.set_label_if_missing("c1", "dog")
    assert warehouse.get_clip("c1").label == "cat"  # type: ignore[union-attr]


def test_constraints_reject_bad_rows(warehouse: Warehouse) -> None:
    import sqlalchemy as sa

    with pytest.raises(sa.exc.IntegrityError):
        warehouse.add_clip(_clip("bad", status="weird"))
    with pytest.raises(sa.exc.IntegrityError):
        warehouse.add_clip(_clip("bad2", split="holdout"))


def test_quarantine_and_filters(warehouse: Warehouse) -> None:
    warehouse.add_clip(_clip("a", label="x"))
    warehouse.add_clip(_clip("b"))
    warehouse.add_clip(_clip("c", label="y"))
    warehouse.quarantine_clip("c", "decode failed at frame 3")
    assert [c.clip_id for c in warehouse.clips()] == ["a", "b"]
    assert [c.clip_id for c in warehouse.clips(labelled=True)] == ["a"]
    [bad] = warehouse.clips(status="quarantined")
    assert bad.error == "decode failed at frame 3"
    every = warehouse.clips(status=None)
    assert Counter(c.status for c in every) == {"ok": 2, "quarantined": 1}


def test_sources_are_upserted_by_uri(warehouse: Warehouse) -> None:
    warehouse.add_clip(_clip("a"))
    warehouse.record_source("/landing/a.mp4", "a", 100, 1.5, None)
    warehouse.record_source("/landing/a.mp4", "a", 100, 2.5, "lbl")
    assert warehouse.known_sources() == {"/landing/a.mp4": (100, 2.5, "a", "lbl")}


def test_registry_promotion_keeps_one_production_model(warehouse: Warehouse) -> None:
    assert warehouse.production_model() is None
    _register(warehouse, "v0001")
    _register(warehouse, "v0002")
    warehouse.promote_model("v0001")
    assert warehouse.production_model().model_version == "v0001"  # type: ignore[union-attr]
    warehouse.promote_model("v0002")
    stages = {m.model_version: m.stage for m in warehouse.models()}
    assert warehouse.models()[0].streams == ["video"]
    assert stages == {"v0001": "archived", "v0002": "production"}
    assert warehouse.model_with_fingerprint("f-v0001").model_version == "v0001"  # type: ignore[union-attr]
    v2 = warehouse.model("v0002")
    assert v2 is not None and (v2.model_version, v2.stage) == ("v0002", "production")
    assert v2.metrics == {"accuracy": 0.9} and v2.class_names == ["a", "b"]
    assert warehouse.model("v9999") is None
    with pytest.raises(ConfigError, match="not registered"):
        warehouse.promote_model("v9999")


def _prediction(
    clip_id: str, version: str, label: str, confidence: float, when: datetime
) -> dict[str, Any]:
    other = "b" if label == "a" else "a"
    return {
        "clip_id": clip_id,
        "model_version": version,
        "predicted_label": label,
        "confidence": confidence,
        "probabilities": {label: confidence, other: 1 - confidence},
        "scored_at": when,
        "run_id": f"run-{when:%H}",
        "logical_date": when,
    }


def test_predictions_upsert_and_views_follow_the_production_model(warehouse: Warehouse) -> None:
    for clip_id in ("c1", "c2", "c3"):
        warehouse.add_clip(_clip(clip_id, label="a" if clip_id != "c3" else None))
    _register(warehouse, "v0001")
    _register(warehouse, "v0002")
    day1 = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
    day2 = day1 + timedelta(days=1)
    warehouse.upsert_predictions(
        [
            _prediction("c1", "v0001", "a", 0.9, day1),
            _prediction("c2", "v0001", "b", 0.55, day1),
            _prediction("c3", "v0001", "a", 0.8, day1),
        ]
    )
    # Re-scoring c2 with the same version replaces its row instead of adding one.
    warehouse.upsert_predictions([_prediction("c2", "v0001", "a", 0.7, day1)])
    assert len(warehouse.query("SELECT * FROM predictions")) == 3
    assert warehouse.scored_clip_ids("v0001") == {"c1", "c2", "c3"}
    # No model in production yet: the analyst views have nothing to answer with.
    assert warehouse.query("SELECT * FROM latest_predictions") == []

    warehouse.promote_model("v0002")
    # A newer model scores c1 the next day: the views show only what production said.
    warehouse.upsert_predictions([_prediction("c1", "v0002", "b", 0.51, day2)])
    latest = {r["clip_id"]: r for r in warehouse.query("SELECT * FROM latest_predictions")}
    assert set(latest) == {"c1"}
    assert latest["c1"]["model_version"] == "v0002" and latest["c1"]["true_label"] == "a"
    low = warehouse.query("SELECT clip_id FROM low_confidence_predictions ORDER BY clip_id")
    assert [r["clip_id"] for r in low] == ["c1"]  # 0.51 < 0.6

    # Rolling back to v0001 (newer rows exist from v0002): every view follows production.
    warehouse.promote_model("v0001")
    production = {r["clip_id"]: r for r in warehouse.query("SELECT * FROM production_predictions")}
    assert {c: r["model_version"] for c, r in production.items()} == dict.fromkeys(
        ("c1", "c2", "c3"), "v0001"
    )
    assert production["c3"]["true_label"] is None
    assert warehouse.query("SELECT * FROM latest_predictions ORDER BY clip_id") == sorted(
        production.values(), key=lambda r: r["clip_id"]
    )
    assert warehouse.query("SELECT clip_id FROM low_confidence_predictions") == []
    # A clip quarantined later drops out of what analysts see.
    warehouse.quarantine_clip("c2", "failed during scoring")
    assert {r["clip_id"] for r in warehouse.query("SELECT clip_id FROM latest_predictions")} == {
        "c1",
        "c3",
    }

    counts = warehouse.query(
        "SELECT day, model_version, predicted_label, clips FROM daily_label_counts"
        " ORDER BY day, model_version, predicted_label"
    )
    assert [
        (str(r["day"]), r["model_version"], r["predicted_label"], r["clips"]) for r in counts
    ] == [
        ("2026-11-27", "v0001", "a", 3),
        ("2026-11-28", "v0002", "b", 1),
    ]


def test_report_counts_clips_labels_and_held_out_accuracy(warehouse: Warehouse) -> None:
    warehouse.add_clip(_clip("v1", label="a", split="test"))
    warehouse.add_clip(_clip("v2", label="a", split="test"))
    warehouse.add_clip(_clip("v3", label="b"))
    warehouse.add_clip(_clip("s1", modality="audio"))
    warehouse.add_clip(_clip("s2", modality="audio"))
    warehouse.add_clip(_clip("bad", modality=None, status="quarantined", error="no streams"))
    warehouse.quarantine_clip("v3", "decode failed")
    assert warehouse.clip_tallies() == [
        ClipTally("ok", "audio", clips=2, labelled=0),
        ClipTally("ok", "video", clips=2, labelled=2),
        ClipTally("quarantined", "video", clips=1, labelled=1),
        ClipTally("quarantined", None, clips=1, labelled=0),
    ]

    _register(warehouse, "v0001")
    _register(warehouse, "v0002")
    day = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
    warehouse.upsert_predictions(
        [
            _prediction("v1", "v0001", "a", 0.9, day),
            _prediction("v2", "v0001", "b", 0.6, day),
            _prediction("s1", "v0001", "b", 0.8, day),
            _prediction("v1", "v0002", "b", 0.7, day),
        ]
    )
    assert warehouse.unlabelled_clips_scored() == 0  # no production model yet
    warehouse.promote_model("v0001")
    assert warehouse.label_tallies("v0001") == [
        LabelTally("a", clips=1, mean_confidence=pytest.approx(0.9)),
        LabelTally("b", clips=2, mean_confidence=pytest.approx(0.7)),
    ]
    score = warehouse.held_out_score("v0001")
    assert (score.clips, score.correct, score.accuracy) == (2, 1, 0.5)
    assert warehouse.held_out_score("v0002").accuracy == 0.0
    assert warehouse.held_out_score("v9999") == HeldOutScore(clips=0, correct=0)
    assert warehouse.held_out_score("v9999").accuracy is None
    assert warehouse.label_tallies("v9999") == []
    assert warehouse.unlabelled_clips_scored() == 1  # s1; s2 was never scored


def _migrations_up_to(version: str, folder: Path) -> Path:
    """A copy of the migrations numbered ``version`` and below: the schema of an older release."""
    folder.mkdir()
    for path in sql_dir().glob("*.sql"):
        if path.name[:3] <= version:
            shutil.copy(path, folder / path.name)
    return folder


def test_migration_007_drops_test_accuracy_and_keeps_every_model_and_prediction(
    warehouse_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy as sa

    older = _migrations_up_to("006", tmp_path / "sql-006")
    monkeypatch.setattr(connection, "sql_dir", lambda: older)
    with Warehouse.connect(warehouse_url) as wh:
        with wh.engine.begin() as conn:  # a clip and a version registered by the release before 007
            conn.execute(
                sa.text(
                    "INSERT INTO media_files (clip_id, uri, label, split, status, size_bytes,"
                    " ingested_at, updated_at) VALUES ('c1', '/landing/c1.mp4', 'a', 'train',"
                    " 'ok', 100, :t, :t)"
                ),
                {"t": datetime(2026, 11, 27, tzinfo=UTC)},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO model_versions (model_version, model_uri, settings_hash,"
                    " fingerprint, class_names, metrics, test_accuracy, stage, created_at,"
                    " streams) VALUES ('v0001', '/models/v0001', 'h', 'f', '[\"a\", \"b\"]',"
                    " '{\"accuracy\": 0.75}', 0.75, 'candidate', :t, '[\"video\"]')"
                ),
                {"t": datetime(2026, 11, 27, tzinfo=UTC)},
            )
        wh.promote_model("v0001")
        when = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
        wh.upsert_predictions([_prediction("c1", "v0001", "a", 0.9, when)])
        monkeypatch.undo()

        later = sorted(p.name[:3] for p in sql_dir().glob("*.sql") if p.name[:3] > "006")
        assert wh.migrate() == later and later[0] == "007"
        [row] = wh.query("SELECT * FROM model_versions")
        assert "test_accuracy" not in row and row["model_version"] == "v0001"
        model = wh.model("v0001")
        assert model is not None and model.metrics == {"accuracy": 0.75}
        [seen] = wh.query("SELECT clip_id, model_version FROM production_predictions")
        assert seen == {"clip_id": "c1", "model_version": "v0001"}
        _register(wh, "v0002")  # registering no longer names the column
        assert [m.model_version for m in wh.models()] == ["v0001", "v0002"]
        assert wh.migrate() == []


def test_bad_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="warehouse URL"):
        Warehouse.connect("notadb://x")


def test_split_sql_handles_comments_and_multiline_statements() -> None:
    script = "-- header\nCREATE TABLE a (\n  x INT -- note; not the end\n);\n\nCREATE VIEW v AS\nSELECT 1;\n"
    assert list(split_sql(script)) == ["CREATE TABLE a (\n  x INT\n)", "CREATE VIEW v AS\nSELECT 1"]


def test_concurrent_first_connections_to_a_new_sqlite_file_all_succeed(tmp_path: Path) -> None:
    # Two Airflow tasks opening a fresh warehouse at once used to race in migrate()
    # ("table media_files already exists"). Spawned, not forked: this process may have loaded
    # TensorFlow, and a fork after its threads started can hang the child.
    import multiprocessing

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    context = multiprocessing.get_context("spawn")
    with context.Pool(6) as pool:
        results = pool.map(_connect_and_count, [url] * 12, chunksize=1)
    assert results == [len(list(sql_dir().glob("*.sql")))] * 12


def _connect_and_count(url: str) -> int:
    with Warehouse.connect(url) as wh:
        return len(wh.query("SELECT version FROM schema_migrations"))
