"""Tasks take the warehouse from the Airflow connection stpipe_warehouse when it exists, else
from PIPELINE_WAREHOUSE_URL: a real ``dag.test()`` run of media_ingest with both set to
different SQLite files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.media.synthetic import generate_demo_corpus
from pipeline.warehouse.database import Warehouse
from tests.conftest import pipeline_env

pytestmark = pytest.mark.timeout(600)


def _registered_files(url: str) -> int:
    with Warehouse.connect(url) as warehouse:
        [row] = warehouse.query("SELECT COUNT(*) AS n FROM media_files")
    return int(row["n"])


def _ingest(dag_bag: Any) -> int:
    """Run media_ingest; the number of files it registered (added or quarantined)."""
    dag_run = dag_bag.get_dag("media_ingest").test()
    assert dag_run.state == "success"
    [ti] = dag_run.get_task_instances()
    result = ti.xcom_pull(task_ids="ingest_media")
    return int(result["added"]) + int(result["quarantined"])


@pytest.fixture
def ingest_env(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """PIPELINE_* variables as on a worker, PIPELINE_WAREHOUSE_URL naming env.db, and a small
    corpus in the landing folder; returns env.db's URL."""
    for key, value in pipeline_env(settings).items():
        monkeypatch.setenv(key, value)
    env_url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("PIPELINE_WAREHOUSE_URL", env_url)
    monkeypatch.delenv("AIRFLOW_CONN_STPIPE_WAREHOUSE", raising=False)
    generate_demo_corpus(Path(settings.landing_root), clips_per_class=1, unlabelled_per_class=0)
    return env_url


def test_tasks_write_to_the_warehouse_of_the_stpipe_warehouse_connection(
    dag_bag: Any, ingest_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection_db = tmp_path / "from-connection.db"
    # JSON, as a secrets backend or `airflow connections add --conn-json` holds it.
    connection = {"conn_type": "sqlite", "host": str(connection_db)}
    monkeypatch.setenv("AIRFLOW_CONN_STPIPE_WAREHOUSE", json.dumps(connection))

    registered = _ingest(dag_bag)

    assert registered > 0
    assert _registered_files(f"sqlite:///{connection_db}") == registered
    assert not Path(ingest_env.removeprefix("sqlite:///")).exists()


def test_without_the_connection_tasks_use_pipeline_warehouse_url(
    dag_bag: Any, ingest_env: str
) -> None:
    registered = _ingest(dag_bag)

    assert registered > 0
    assert _registered_files(ingest_env) == registered


def test_tasks_read_the_connection_from_the_workers_secrets_backend(
    dag_bag: Any, ingest_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the Compose workers are configured: a LocalFilesystemBackend file holding
    stpipe_warehouse, named by [workers] secrets_backend(_kwargs)."""
    from airflow.sdk.configuration import clear_secrets_backends_cache

    connection_db = tmp_path / "from-backend.db"
    connections = tmp_path / "airflow_connections.json"
    connections.write_text(
        json.dumps({"stpipe_warehouse": {"conn_type": "sqlite", "host": str(connection_db)}})
    )
    monkeypatch.setenv(
        "AIRFLOW__WORKERS__SECRETS_BACKEND",
        "airflow.secrets.local_filesystem.LocalFilesystemBackend",
    )
    monkeypatch.setenv(
        "AIRFLOW__WORKERS__SECRETS_BACKEND_KWARGS",
        json.dumps({"connections_file_path": str(connections)}),
    )
    clear_secrets_backends_cache()
    try:
        registered = _ingest(dag_bag)
    finally:
        monkeypatch.undo()
        clear_secrets_backends_cache()  # later tests must not find this backend

    assert _registered_files(f"sqlite:///{connection_db}") == registered
    assert not Path(ingest_env.removeprefix("sqlite:///")).exists()
