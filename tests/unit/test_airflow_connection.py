"""The warehouse URL from the Airflow connection stpipe_warehouse, built from Airflow's own
``Connection`` parsing (URIs and JSON as AIRFLOW_CONN_* variables and secrets backends hold them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from pipeline.errors import ConfigError
from pipeline.warehouse.airflow_connection import (
    warehouse_url_from_connection,
    warehouse_url_from_connections_file,
)
from pipeline.warehouse.database import Warehouse

#: Every character a URL or a shell could get wrong.
_AWKWARD_PASSWORD = "p@:/%? #&=\"'ü"


def _from_uri(uri: str) -> Any:
    from airflow.sdk import Connection

    return Connection.from_uri(uri, conn_id="stpipe_warehouse")


def _from_json(text: str) -> Any:
    from airflow.sdk import Connection

    return Connection.from_json(text, conn_id="stpipe_warehouse")


def test_a_postgres_connection_becomes_a_psycopg_url_with_the_database_from_schema() -> None:
    connection = _from_uri("postgres://stpipe_writer:secret@postgres:5432/warehouse")
    url = warehouse_url_from_connection(connection)
    assert url == "postgresql+psycopg://stpipe_writer:secret@postgres:5432/warehouse"


def test_the_password_survives_url_escaping() -> None:
    from airflow.sdk import Connection

    connection = Connection(
        conn_id="stpipe_warehouse",
        conn_type="postgres",
        host="db.internal",
        schema="warehouse",
        login="writer@corp",
        password=_AWKWARD_PASSWORD,
        port=6543,
    )
    url = sa.engine.make_url(warehouse_url_from_connection(connection))
    assert url.password == _AWKWARD_PASSWORD
    assert (url.drivername, url.username, url.host, url.port, url.database) == (
        "postgresql+psycopg",
        "writer@corp",
        "db.internal",
        6543,
        "warehouse",
    )
    # And the same connection written as an AIRFLOW_CONN_* URI, as Airflow escapes it.
    again = warehouse_url_from_connection(_from_uri(connection.get_uri()))
    assert sa.engine.make_url(again).password == _AWKWARD_PASSWORD


def test_libpq_extras_become_query_parameters_and_others_are_refused() -> None:
    connection = _from_uri("postgresql://w:pw@h/warehouse?sslmode=require&connect_timeout=5")
    url = sa.engine.make_url(warehouse_url_from_connection(connection))
    assert dict(url.query) == {"connect_timeout": "5", "sslmode": "require"}
    with pytest.raises(ConfigError, match=r"extras \['cursor'\]"):
        warehouse_url_from_connection(_from_uri("postgres://w:pw@h/warehouse?cursor=dictcursor"))


def test_a_sqlite_connection_names_its_file_in_host_or_schema(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.db"
    by_host = _from_json(f'{{"conn_type": "sqlite", "host": "{path}"}}')
    by_uri = _from_uri(f"sqlite:///{path}")  # Airflow parses the path into schema
    for connection in (by_host, by_uri):
        url = warehouse_url_from_connection(connection)
        assert url == f"sqlite:///{path}"
    # A real warehouse opens there.
    Warehouse.connect(url).dispose()
    assert path.exists()


def test_an_explicit_sqlalchemy_url_extra_wins() -> None:
    connection = _from_json(
        '{"conn_type": "generic", "extra": {"sqlalchemy_url": "sqlite:////data/w.db"}}'
    )
    assert warehouse_url_from_connection(connection) == "sqlite:////data/w.db"


@pytest.mark.parametrize(
    ("connection", "message"),
    [
        ('{"conn_type": "mysql", "host": "h", "schema": "w"}', "has type 'mysql'"),
        ('{"conn_type": "postgres", "host": "h"}', "needs a host and a schema"),
        ('{"conn_type": "sqlite"}', "names no file"),
        ('{"conn_type": "postgres", "extra": {"sqlalchemy_url": 5}}', "must be a URL"),
    ],
)
def test_an_unusable_connection_says_what_to_fix(connection: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        warehouse_url_from_connection(_from_json(connection))


def _connections_file(tmp_path: Path, content: Any) -> str:
    path = tmp_path / "airflow_connections.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


@pytest.mark.parametrize(
    "warehouse",
    [
        {
            "conn_type": "postgres",
            "host": "postgres",
            "port": "5432",
            "schema": "warehouse",
            "login": "stpipe_writer",
            "password": _AWKWARD_PASSWORD,
            "extra": {"sslmode": "require"},
        },
        {
            "conn_type": "postgres",
            "host": "postgres",
            "port": 5432,
            "schema": "warehouse",
            "login": "stpipe_writer",
            "password": _AWKWARD_PASSWORD,
            "extra_dejson": {"sslmode": "require"},
        },
    ],
)
def test_a_connections_file_gives_what_airflows_own_reader_gives(
    tmp_path: Path, warehouse: dict[str, Any]
) -> None:
    from airflow.secrets.local_filesystem import LocalFilesystemBackend

    path = _connections_file(tmp_path, {"other": "sqlite://%2Fx.db", "stpipe_warehouse": warehouse})
    by_airflow = LocalFilesystemBackend(connections_file_path=path).get_connection(
        "stpipe_warehouse"
    )
    assert by_airflow is not None
    url = warehouse_url_from_connections_file(path)
    assert url == warehouse_url_from_connection(by_airflow)
    parsed = sa.engine.make_url(url)
    assert (parsed.password, parsed.port, parsed.query) == (
        _AWKWARD_PASSWORD,
        5432,
        {"sslmode": "require"},
    )


def test_a_connections_file_may_hold_a_uri(tmp_path: Path) -> None:
    path = _connections_file(
        tmp_path, {"stpipe_warehouse": "postgres://stpipe_writer:pw@postgres:5432/warehouse"}
    )
    assert warehouse_url_from_connections_file(path) == (
        "postgresql+psycopg://stpipe_writer:pw@postgres:5432/warehouse"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("{not json", "as JSON"),
        ({"other": {"conn_type": "sqlite", "host": "/x.db"}}, "has no connection stpipe_warehouse"),
        ({"stpipe_warehouse": {"conn_type": "sqlite", "hots": "/x.db"}}, "must be a URI or"),
        ({"stpipe_warehouse": {"conn_type": "postgres", "port": "54x"}}, "is not a port number"),
        ({"stpipe_warehouse": {"conn_type": "mysql", "host": "db"}}, "needs postgres or sqlite"),
    ],
)
def test_an_unusable_connections_file_says_what_to_fix(
    tmp_path: Path, content: Any, message: str
) -> None:
    path = (
        str(tmp_path / "missing.json") if content is None else _connections_file(tmp_path, content)
    )
    with pytest.raises(ConfigError, match=message):
        warehouse_url_from_connections_file(path)


def test_the_module_imports_nothing_from_airflow() -> None:
    check = (
        "import sys, pipeline.warehouse.airflow_connection; "
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"
