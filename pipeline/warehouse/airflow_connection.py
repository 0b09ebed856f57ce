"""The warehouse's SQLAlchemy URL from an Airflow connection (``stpipe_warehouse``).

Pure: it reads the connection's fields and imports nothing from Airflow (but to parse a URI in a
connections file), so a DAG task looks the connection up (``dags/_shared.py``) and the
conversion is tested without Airflow.

* ``postgres`` / ``postgresql``: ``postgresql+psycopg://login:password@host:port/schema``
  (Airflow keeps the database name in ``schema``); extras that are libpq connection parameters
  (``sslmode``, ``connect_timeout``, ...) become query parameters.
* ``sqlite``: ``sqlite:///path``, the path in ``host`` (Airflow's SQLite convention) or in
  ``schema`` (what ``sqlite:////abs/path.db`` parses to).
* any type: an extra ``{"sqlalchemy_url": "..."}`` is taken as the URL itself.

:func:`with_warehouse_from_connections_file` gives settings without a warehouse URL the one of
the JSON connections file ``PIPELINE_WAREHOUSE_CONNECTIONS_FILE`` names (the Compose workers'
secrets backend file), so that ``stpipe`` run by hand in a worker writes where its tasks write.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.engine import URL

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.config import Settings

#: The Airflow connection DAG tasks take the warehouse from.
WAREHOUSE_CONN_ID = "stpipe_warehouse"

#: libpq connection parameters a PostgreSQL connection's extras may carry into the URL.
LIBPQ_PARAMETERS = frozenset(
    {
        "application_name",
        "connect_timeout",
        "keepalives",
        "keepalives_idle",
        "options",
        "sslcert",
        "sslkey",
        "sslmode",
        "sslrootcert",
        "target_session_attrs",
    }
)


class ConnectionFields(Protocol):
    """What is read of an Airflow ``Connection`` (``airflow.sdk.Connection`` has these)."""

    @property
    def conn_type(self) -> str | None: ...
    @property
    def host(self) -> str | None: ...
    @property
    def schema(self) -> str | None: ...
    @property
    def login(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def port(self) -> int | None: ...
    @property
    def extra(self) -> str | None: ...


def _extras(connection: ConnectionFields) -> dict[str, Any]:
    if not connection.extra:
        return {}
    try:
        extras = json.loads(connection.extra)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"the Airflow connection {WAREHOUSE_CONN_ID}'s extra is not JSON ({exc}); "
            'write it as a JSON object, e.g. {"sslmode": "require"}.'
        ) from exc
    if not isinstance(extras, Mapping):
        raise ConfigError(
            f"the Airflow connection {WAREHOUSE_CONN_ID}'s extra must be a JSON object"
        )
    return dict(extras)


def _postgres_url(connection: ConnectionFields, extras: Mapping[str, Any]) -> str:
    unknown = sorted(set(extras) - LIBPQ_PARAMETERS)
    if unknown:
        raise ConfigError(
            f"the Airflow connection {WAREHOUSE_CONN_ID} has extras {unknown} the warehouse "
            f"cannot use; keep to libpq parameters ({', '.join(sorted(LIBPQ_PARAMETERS))}) or "
            'give the whole URL as {"sqlalchemy_url": "postgresql+psycopg://..."}.'
        )
    if not connection.host or not connection.schema:
        raise ConfigError(
            f"the Airflow connection {WAREHOUSE_CONN_ID} needs a host and a schema (the database "
            "name), e.g. postgresql://stpipe_writer:PASSWORD@postgres:5432/warehouse."
        )
    url = URL.create(
        "postgresql+psycopg",
        username=connection.login or None,
        password=connection.password or None,
        host=connection.host,
        port=connection.port or None,
        database=connection.schema,
        query={key: str(value) for key, value in sorted(extras.items())},
    )
    return url.render_as_string(hide_password=False)


def _sqlite_url(connection: ConnectionFields) -> str:
    path = connection.host or connection.schema
    if not path:
        raise ConfigError(
            f"the Airflow connection {WAREHOUSE_CONN_ID} (sqlite) names no file; put the "
            "database file's path in its host, e.g. sqlite://%2Fdata%2Fwarehouse.db."
        )
    return URL.create("sqlite", database=path).render_as_string(hide_password=False)


def warehouse_url_from_connection(connection: ConnectionFields) -> str:
    """The SQLAlchemy URL of the warehouse an Airflow connection describes.

    Raises:
        ConfigError: an unsupported connection type, a missing host/database, or extras that
            do not belong in the URL.
    """
    extras = _extras(connection)
    explicit = extras.pop("sqlalchemy_url", None)
    if explicit is not None:
        if not isinstance(explicit, str) or "://" not in explicit:
            raise ConfigError(
                f"the Airflow connection {WAREHOUSE_CONN_ID}'s sqlalchemy_url extra must be a "
                "URL such as postgresql+psycopg://user:password@host:5432/warehouse."
            )
        return explicit
    conn_type = (connection.conn_type or "").lower()
    if conn_type in {"postgres", "postgresql"}:
        return _postgres_url(connection, extras)
    if conn_type == "sqlite":
        return _sqlite_url(connection)
    raise ConfigError(
        f"the Airflow connection {WAREHOUSE_CONN_ID} has type {connection.conn_type!r}; the "
        'warehouse needs postgres or sqlite (or an extra {"sqlalchemy_url": "..."}).'
    )


def warehouse_url_from_connections_file(path: str) -> str:
    """The warehouse URL of the connection ``stpipe_warehouse`` in an Airflow connections file in
    JSON, the format Airflow's ``LocalFilesystemBackend`` reads from a ``.json`` file (the Compose
    workers' secrets backend): connection id -> an object of connection fields, or a URI.

    Raises:
        ConfigError: the file is missing or is not such JSON, or holds no usable
            stpipe_warehouse.
    """
    try:
        connections = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"PIPELINE_WAREHOUSE_CONNECTIONS_FILE={path!r} does not exist; point it at the Airflow "
            "connections file that holds stpipe_warehouse (in Compose: "
            "/run/secrets/airflow_connections.json), or unset it."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"cannot read the Airflow connections file {path} as JSON: {exc}"
        ) from exc
    if not isinstance(connections, Mapping) or WAREHOUSE_CONN_ID not in connections:
        raise ConfigError(
            f"the Airflow connections file {path} has no connection {WAREHOUSE_CONN_ID}; add it, "
            "or unset PIPELINE_WAREHOUSE_CONNECTIONS_FILE."
        )
    return warehouse_url_from_connection(_file_connection(connections[WAREHOUSE_CONN_ID], path))


@dataclass(frozen=True)
class _FileConnection:
    """The fields of a connection written as a JSON object."""

    conn_type: str | None = None
    host: str | None = None
    schema: str | None = None
    login: str | None = None
    password: str | None = None
    port: int | None = None
    extra: str | None = None


_FILE_FIELDS = {"conn_id", "description", "extra_dejson", *_FileConnection.__dataclass_fields__}


def _file_connection(value: Any, path: str) -> ConnectionFields:
    if isinstance(value, str):  # a URI: parsed as Airflow parses it
        from airflow.sdk import Connection

        connection: ConnectionFields = Connection.from_uri(value, conn_id=WAREHOUSE_CONN_ID)
        return connection
    if not isinstance(value, Mapping) or set(value) - _FILE_FIELDS:
        raise ConfigError(
            f"{WAREHOUSE_CONN_ID} in {path} must be a URI or an object of connection fields "
            f"({', '.join(sorted(_FILE_FIELDS))})"
        )
    fields = {k: v for k, v in value.items() if k in _FileConnection.__dataclass_fields__}
    extra = value.get("extra_dejson", fields.get("extra"))
    if isinstance(extra, Mapping):
        fields["extra"] = json.dumps(extra)
    port = fields.get("port")
    if isinstance(port, str) and port.isdigit():
        fields["port"] = int(port)
    elif port is not None and (not isinstance(port, int) or isinstance(port, bool)):
        raise ConfigError(f"{WAREHOUSE_CONN_ID} in {path}: port {port!r} is not a port number")
    return _FileConnection(**fields)


def with_warehouse_from_connections_file(settings: Settings) -> Settings:
    """``settings``, with the warehouse of ``PIPELINE_WAREHOUSE_CONNECTIONS_FILE`` if they name
    that file and no warehouse URL (an explicit URL, or a task's Airflow connection, wins)."""
    if settings.warehouse_url or not settings.warehouse_connections_file:
        return settings
    url = warehouse_url_from_connections_file(settings.warehouse_connections_file)
    return settings.model_copy(update={"warehouse_url": url})
