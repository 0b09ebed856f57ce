"""Which warehouse `stpipe` run by hand writes to, and that it never prints its password.

In a Compose worker the tasks read the warehouse from the Airflow connection stpipe_warehouse in
the workers' connections file; `stpipe` run there by hand reads the same file through
PIPELINE_WAREHOUSE_CONNECTIONS_FILE (it used to fall back to a SQLite file in the data folder
that nothing else reads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline.config import Settings
from pipeline.media.synthetic import generate_demo_corpus
from pipeline.warehouse.database import Warehouse
from tests.processes import stpipe

pytestmark = [pytest.mark.timeout(300)]


def _registered_files(url: str) -> int:
    with Warehouse.connect(url) as warehouse:
        [row] = warehouse.query("SELECT COUNT(*) AS n FROM media_files")
    return int(row["n"])


def test_stpipe_by_hand_writes_to_the_warehouse_of_the_workers_connections_file(
    settings: Settings, tmp_path: Path
) -> None:
    connection_db = tmp_path / "from-connections-file.db"
    connections = tmp_path / "airflow_connections.json"
    connections.write_text(
        json.dumps({"stpipe_warehouse": {"conn_type": "sqlite", "host": str(connection_db)}})
    )
    by_hand = settings.model_copy(update={"warehouse_url": None})  # as in a worker: no URL
    generate_demo_corpus(Path(by_hand.landing_root), clips_per_class=1, unlabelled_per_class=0)

    stpipe(by_hand, "ingest", PIPELINE_WAREHOUSE_CONNECTIONS_FILE=str(connections))

    assert _registered_files(f"sqlite:///{connection_db}") > 0
    assert not Path(by_hand.data_dir, "warehouse.db").exists()
    explicit = tmp_path / "explicit.db"  # an explicit URL still wins over the file
    shown = stpipe(
        by_hand,
        "settings",
        PIPELINE_WAREHOUSE_CONNECTIONS_FILE=str(connections),
        PIPELINE_WAREHOUSE_URL=f"sqlite:///{explicit}",
    ).stdout
    assert str(explicit) in shown.split("warehouse (resolved)")[1].splitlines()[0]


def test_a_connections_file_without_the_warehouse_is_a_clear_error(
    settings: Settings, tmp_path: Path
) -> None:
    connections = tmp_path / "airflow_connections.json"
    connections.write_text(json.dumps({"other": {"conn_type": "sqlite", "host": "/x.db"}}))
    by_hand = settings.model_copy(update={"warehouse_url": None})
    result = stpipe(
        by_hand, "status", check=False, PIPELINE_WAREHOUSE_CONNECTIONS_FILE=str(connections)
    )
    assert result.returncode == 1
    assert "has no connection stpipe_warehouse" in " ".join((result.stdout + result.stderr).split())


@pytest.mark.postgres
def test_settings_and_status_never_print_the_warehouse_password(
    settings: Settings, postgres_url: str, tmp_path: Path
) -> None:
    password = "s3cr3t-Pw-4711"
    # The server trusts local connections, so the password is carried but not needed.
    url = sa.engine.make_url(postgres_url).set(password=password)
    with_password = url.render_as_string(hide_password=False)
    connections = tmp_path / "airflow_connections.json"
    airflow_uri = url.set(drivername="postgres").render_as_string(hide_password=False)
    connections.write_text(json.dumps({"stpipe_warehouse": airflow_uri}))  # a URI, too
    by_hand = settings.model_copy(update={"warehouse_url": None})

    for command in ("settings", "status"):
        runs = [
            stpipe(by_hand.model_copy(update={"warehouse_url": with_password}), command),
            stpipe(by_hand, command, PIPELINE_WAREHOUSE_CONNECTIONS_FILE=str(connections)),
        ]
        for result in runs:
            printed = result.stdout + result.stderr
            assert password not in printed, command
            assert "***" in printed, command
