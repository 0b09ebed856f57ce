"""Stages run twice at the same moment, as real processes (two CLI runs, two Airflow workers),
on SQLite and on PostgreSQL: nothing is done twice, no name is taken twice, no row is doubled,
and every file stays whole."""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config import Settings
from pipeline.features.store import FeatureStore
from pipeline.stages import run_ingest, run_train
from pipeline.training.params import TrainParams
from pipeline.warehouse.database import Warehouse
from tests.feature_factory import temporal_corpus
from tests.media_factory import small_corpus
from tests.processes import finish, start_stpipe, stpipe, summary_values

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def settings_on(request: pytest.FixtureRequest, make_settings: Callable[..., Settings]) -> Settings:
    """Settings with the warehouse on SQLite, or on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return make_settings()
    return make_settings(warehouse_url=request.getfixturevalue("postgres_url"))


def _features(settings: Settings, per_class: int = 20) -> None:
    with Warehouse.connect(settings.warehouse) as wh:
        temporal_corpus(wh, FeatureStore.from_settings(settings), per_class=per_class)


def test_trainings_at_once_get_distinct_versions_and_whole_folders(settings_on: Settings) -> None:
    settings = settings_on
    _features(settings)
    train = ["train", "--epochs", "3", "--batch-size", "8", "--no-promote"]
    processes = [
        start_stpipe(settings, *train, "--lstm-units", "8"),
        start_stpipe(settings, *train, "--lstm-units", "16"),
        start_stpipe(settings, *train, "--lstm-units", "8"),  # the same training as the first
    ]
    outputs = [summary_values(finish(p, timeout=400)) for p in processes]

    with Warehouse.connect(settings.warehouse) as wh:
        rows = {m.model_version: m for m in wh.models()}
        reservations = wh.query("SELECT model_version FROM model_version_reservations")
    assert sorted(rows) == ["v0001", "v0002"]
    assert len(reservations) == 2
    assert outputs[0]["model_version"] == outputs[2]["model_version"]  # waited, then reused
    assert {o["model_version"] for o in outputs} == {"v0001", "v0002"}
    assert sorted(str(o["reused"]) for o in outputs) == ["False", "False", "True"]
    models = Path(settings.models_root)
    for version, record in rows.items():
        metadata = json.loads((models / version / "metadata.json").read_text())
        assert metadata["model_version"] == version
        assert metadata["fingerprint"] == record.fingerprint
        assert zipfile.is_zipfile(models / version / "model.keras")
    assert sorted(p.name for p in models.iterdir() if not p.name.startswith("_")) == [
        "v0001",
        "v0002",
    ]  # no half-written or temporary folder left behind


def test_scorings_at_once_leave_one_row_per_clip_and_version(settings_on: Settings) -> None:
    settings = settings_on
    _features(settings, per_class=40)
    run_train(settings, TrainParams(epochs=2, batch_size=16, seed=settings.seed))
    processes = [start_stpipe(settings, "score", "--run-id", f"run-{i}") for i in range(2)]
    for process in processes:
        finish(process, timeout=300)
    with Warehouse.connect(settings.warehouse) as wh:
        clips = wh.clips()
        production = wh.production_model()
        assert production is not None
        predictions = wh.query("SELECT clip_id, model_version FROM predictions")
        segments = wh.query("SELECT clip_id, segment_index, model_version FROM segment_predictions")
        view = wh.query("SELECT clip_id FROM latest_predictions")
    keys = Counter((r["clip_id"], r["model_version"]) for r in predictions)
    assert set(keys.values()) == {1} and len(keys) == len(clips)
    assert len(segments) == len(clips) and len(view) == len(clips)
    again = summary_values(stpipe(settings, "score").stdout)
    assert (again["scored"], again["already_scored"]) == (0, len(clips))


def test_extractions_at_once_cache_each_clip_once(settings_on: Settings, tmp_path: Path) -> None:
    settings = settings_on
    small_corpus(tmp_path / "media")
    run_ingest(settings, str(tmp_path / "media" / "labelled"), labelled=True)
    processes = [start_stpipe(settings, "extract") for _ in range(2)]
    summaries = [summary_values(finish(p, timeout=400)) for p in processes]

    with Warehouse.connect(settings.warehouse) as wh:
        ok = {c.clip_id for c in wh.clips()}
        assert wh.query("SELECT * FROM work_claims") == []  # every claim released
    assert sum(s["extracted"] for s in summaries) == len(ok) == 18  # nothing computed twice
    assert sum(s["by_other_runs"] + s["extracted"] for s in summaries) >= len(ok)
    store = FeatureStore.from_settings(settings)
    rows = Counter(
        (clip_id, segment)
        for part in store.parquet_parts()
        for clip_id, segment in zip(
            *pq.read_table(part, columns=["clip_id", "segment_index"]).to_pydict().values(),
            strict=True,
        )
    )
    assert {clip_id for clip_id, _ in rows} == ok
    assert set(rows.values()) == {1}  # every segment of every clip stored exactly once
    assert store.verify()["problems"] == []
