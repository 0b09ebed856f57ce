"""Each DAG run for real with ``dag.test()`` (Airflow 3 in-process runner, SQLite metadata DB)
on a tiny generated corpus, twice: the second pass must change nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.synthetic import generate_demo_corpus
from pipeline.warehouse import Warehouse
from tests.conftest import pipeline_env

pytestmark = pytest.mark.slow


@pytest.fixture
def dag_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Tasks read their settings from PIPELINE_* variables, as on a real worker."""
    for key, value in pipeline_env(settings).items():
        monkeypatch.setenv(key, value)
    return settings


def _run(dag_bag: Any, dag_id: str, **kwargs: Any) -> dict[str, Any]:
    """Run a DAG with dag.test(); return the state and return value of its last task."""
    dag = dag_bag.get_dag(dag_id)
    dag_run = dag.test(**kwargs)
    assert dag_run.state == "success", f"{dag_id} ended {dag_run.state}"
    [last] = [t.task_id for t in dag.tasks if not t.downstream_task_ids]
    [ti] = [ti for ti in dag_run.get_task_instances() if ti.task_id == last]
    return {"state": ti.state, "result": ti.xcom_pull(task_ids=last)}


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

    train = _run(dag_bag, "model_training", run_conf={"epochs": 3, "batch_size": 8})
    assert train["result"]["production"] is True
    assert train["result"]["class_names"] == [
        "colours_forward",
        "colours_reverse",
        "tones_falling",
        "tones_rising",
    ]

    score = _run(dag_bag, "nightly_scoring")
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
    assert _run(dag_bag, "model_training", run_conf={"epochs": 3, "batch_size": 8})["result"][
        "reused"
    ]
    assert _run(dag_bag, "nightly_scoring")["result"]["scored"] == 0
    assert _snapshot(dag_env) == before


def test_scoring_before_any_model_is_skipped_not_failed(dag_bag: Any, dag_env: Settings) -> None:
    outcome = _run(dag_bag, "nightly_scoring")
    assert outcome["state"] == "skipped"


def test_training_params_are_validated(dag_bag: Any, dag_env: Settings) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        dag_bag.get_dag("model_training").test(run_conf={"epochs": 0})
