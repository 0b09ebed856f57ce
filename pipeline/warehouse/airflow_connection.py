"""The warehouse's SQLAlchemy URL from an Airflow connection (``stpipe_warehouse``).

Pure: it reads the connection's fields and imports nothing from Airflow, so a DAG task looks the
connection up (``dags/_shared.py``) and the conversion is tested without Airflow.

* ``postgres`` / ``postgresql``: ``postgresql+psycopg://login:password@host:port/schema``
  (Airflow keeps the database name in ``schema``); extras that are libpq connection parameters
  (``sslmode``, ``connect_timeout``, ...) become query parameters.
* ``sqlite``: ``sqlite:///path``, the path in ``host`` (Airflow's SQLite convention) or in
  ``schema`` (what ``sqlite:////abs/path.db`` parses to).
* any type: an extra ``{"sqlalchemy_url": "..."}`` is taken as the URL itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from sqlalchemy.engine import URL

from pipeline.errors import ConfigError

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
