"""Each DAG run for real with ``dag.test()`` (Airflow 3 in-process runner, SQLite metadata DB)
on a tiny generated corpus, twice: the second pass must change nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.media.synthetic import generate_demo_corpus
from pipeline.warehouse.database import Warehouse
from tests.conftest import pipeline_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def dag_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Tasks read their settings from PIPELINE_* variables, as on a real worker."""
    for key, value in pipeline_env(settings).items():
        monkeypatch.setenv(key, value)
    return settings


def _run(dag_bag: Any, dag_id: str, task_id: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run a DAG with dag.test(); return the state and return value of ``task_id`` (default:
    its only leaf task) and the states of all its task instances."""
    dag = dag_bag.get_dag(dag_id)
    dag_run = dag.test(**kwargs)
    assert dag_run.state == "success", f"{dag_id} ended {dag_run.state}"
    if task_id is None:
        [task_id] = [t.task_id for t in dag.tasks if not t.downstream_task_ids]
    instances = dag_run.get_task_instances()
    states: dict[str, list[str]] = {}
    for ti in instances:
        states.setdefault(ti.task_id, []).append(str(ti.state))
    [ti] = [ti for ti in instances if ti.task_id == task_id and ti.map_index in (-1, 0)]
    if ti.map_index >= 0:  # a mapped task: the first instance's value
        result = ti.xcom_pull(task_ids=task_id, map_indexes=ti.map_index)
    else:
        result = ti.xcom_pull(task_ids=task_id)
    return {"state": ti.state, "result": result, "states": states}


def _snapshot(settings: Settings) -> dict[str, Any]:
    with Warehouse.connect(settings.warehouse) as wh:
        tables = {
            name: wh.query(f"SELECT * FROM {name} ORDER BY 1, 2")
            for name in ("media_files", "model_versions", "predictions")
        }
    files = {
        str(p.relative_to(settings.data_dir)): p.stat().st_mtime_ns
        for folder in ("features", "models", "media")
        for p in Path(settings.data_dir, folder).rglob("*")
        if p.is_file()
    }
    return {"tables": tables, "files": files}


def test_the_four_dags_run_end_to_end_and_a_rerun_changes_nothing(
    dag_bag: Any, dag_env: Settings
) -> None:
    corpus = generate_demo_corpus(
        Path(dag_env.landing_root), clips_per_class=6, unlabelled_per_class=1
    )

    ingest = _run(dag_bag, "media_ingest")
    assert ingest["result"]["added"] == corpus.labelled + corpus.unlabelled
    assert ingest["result"]["quarantined"] == 1

    extract = _run(dag_bag, "feature_extraction")
    assert extract["result"]["extracted"] == corpus.labelled + corpus.unlabelled

    train = _run(
        dag_bag, "model_training", "train_candidate", run_conf={"epochs": 3, "batch_size": 8}
    )
    assert train["states"]["promote_model"] == ["success"]  # no production model yet: gate passes
    assert train["states"]["keep_production"] == ["skipped"]
    assert train["result"]["class_names"] == [
        "colours_forward",
        "colours_reverse",
        "tones_falling",
        "tones_rising",
    ]

    score = _run(dag_bag, "nightly_scoring", "score_new_clips")
    assert score["result"]["scored"] == corpus.labelled + corpus.unlabelled

    with Warehouse.connect(dag_env.warehouse) as wh:
        [row] = wh.query("SELECT COUNT(*) AS n, MIN(run_id) AS run_id FROM predictions")
    assert row["n"] == corpus.labelled + corpus.unlabelled
    assert row["run_id"].startswith("manual__")

    before = _snapshot(dag_env)
    assert _run(dag_bag, "media_ingest")["result"]["added"] == 0
    assert (
        _run(dag_bag, "feature_extraction")["result"]["cached"]
        == corpus.labelled + corpus.unlabelled
    )
    again = _run(
        dag_bag, "model_training", "train_candidate", run_conf={"epochs": 3, "batch_size": 8}
    )
    assert again["result"]["reused"]
    assert again["states"]["keep_production"] == ["success"]  # it is production already
    assert _run(dag_bag, "nightly_scoring", "score_new_clips")["result"]["scored"] == 0
    assert _snapshot(dag_env) == before


def test_scoring_before_any_model_is_skipped_not_failed(dag_bag: Any, dag_env: Settings) -> None:
    outcome = _run(dag_bag, "nightly_scoring", "score_new_clips")
    assert outcome["state"] == "skipped"


def test_training_maps_a_grid_and_promotes_the_best_candidate(
    dag_bag: Any, dag_env: Settings
) -> None:
    from pipeline.features.store import FeatureStore
    from tests.feature_factory import temporal_corpus

    with Warehouse.connect(dag_env.warehouse) as wh:
        temporal_corpus(wh, FeatureStore.from_settings(dag_env), per_class=30)
    outcome = _run(
        dag_bag,
        "model_training",
        "select_best",
        run_conf={"epochs": 4, "grid": {"lstm_units": [8, 32], "dropout": [0.0, 0.2]}},
    )
    assert outcome["states"]["train_candidate"] == ["success"] * 4
    best = outcome["result"]
    assert best["candidate"]["lstm_units"] in (8, 32)
    with Warehouse.connect(dag_env.warehouse) as wh:
        versions = wh.models()
        production = wh.production_model()
    assert len(versions) == 4
    f1 = {m.model_version: m.metrics.get("val_macro_f1") or 0.0 for m in versions}
    assert f1[best["model_version"]] == max(f1.values())
    assert production is not None and production.model_version == best["model_version"]


def test_a_worse_candidate_is_kept_out_of_production(dag_bag: Any, dag_env: Settings) -> None:
    from pipeline.features.store import FeatureStore
    from tests.feature_factory import temporal_corpus

    with Warehouse.connect(dag_env.warehouse) as wh:
        temporal_corpus(wh, FeatureStore.from_settings(dag_env), per_class=30)
    good = _run(dag_bag, "model_training", "select_best", run_conf={"epochs": 15})
    worse = _run(
        dag_bag, "model_training", "select_best", run_conf={"epochs": 1, "learning_rate": 1e-6}
    )
    assert worse["states"]["keep_production"] == ["success"]
    assert worse["states"]["promote_model"] == ["skipped"]
    with Warehouse.connect(dag_env.warehouse) as wh:
        production = wh.production_model()
    assert production is not None and production.model_version == good["result"]["model_version"]


def test_feedback_watch_calls_for_retraining_once_per_batch_of_labels(
    dag_bag: Any, dag_env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.stages import run_label
    from tests.unit.test_warehouse import _clip

    monkeypatch.setenv("PIPELINE_RETRAIN_MIN_FEEDBACK", "2")
    clips = [c * 64 for c in "abcd"]
    with Warehouse.connect(dag_env.warehouse) as wh:
        for clip in clips:
            wh.add_clip(_clip(clip))
    for clip in clips[:2]:
        run_label(dag_env, clip, "cat", reviewer="ana")
    first = _run(dag_bag, "feedback_watch")
    assert first["states"]["announce_feedback"] == ["success"]
    # An hour later no model was trained yet: the same two labels do not call again.
    again = _run(dag_bag, "feedback_watch")
    assert again["states"]["check_feedback"] == ["success"]
    assert again["states"]["announce_feedback"] == ["skipped"]
    for clip in clips[2:]:
        run_label(dag_env, clip, "dog", reviewer="bo")
    assert _run(dag_bag, "feedback_watch")["states"]["announce_feedback"] == ["success"]


def test_training_params_are_validated(dag_bag: Any, dag_env: Settings) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        dag_bag.get_dag("model_training").test(run_conf={"epochs": 0})
