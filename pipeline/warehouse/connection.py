"""The warehouse connection: engine, schema migrations and the raw-SQL escape hatch.

One SQLAlchemy engine (embedded SQLite by default, PostgreSQL in production). The schema is the
numbered plain-SQL files in ``sql/``; :meth:`WarehouseConnection.migrate` applies the ones not
yet applied, in order, each in its own transaction.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import sqlite3
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline import storage
from pipeline.errors import ConfigError, InfrastructureError, infrastructure_problem

log = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Serialises concurrent migrations on PostgreSQL (two Airflow tasks starting at once).
_PG_MIGRATION_LOCK = 7_391_522


def sql_dir() -> Path:
    """The ``sql/`` folder: inside the installed wheel, or at the repository root."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "sql"
    return packaged if packaged.is_dir() else package.parent / "sql"


def utc_now() -> datetime:
    return datetime.now(UTC)


class WarehouseConnection:
    """The engine and the schema; the per-table parts of
    :class:`~pipeline.warehouse.database.Warehouse` build on it. Construct with :meth:`connect`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def connect(cls, url: str, *, migrate: bool = True) -> Self:
        """Open the warehouse at ``url`` and bring its schema up to date."""
        try:
            engine = _make_engine(url)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise ConfigError(
                f"cannot use warehouse URL {redact_url(url)!r}: {exc}. Expected e.g. "
                "sqlite:////abs/path/warehouse.db or postgresql+psycopg://user@host:5432/db"
            ) from exc
        warehouse = cls(engine)
        if migrate:
            try:
                warehouse.migrate()
            except sa.exc.DBAPIError as exc:
                engine.dispose()
                problem = infrastructure_problem(exc)
                if problem is None:
                    raise
                raise InfrastructureError(
                    f"cannot open the warehouse {redact_url(url)}: {problem}"
                ) from exc
        return warehouse

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def dispose(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.dispose()

    def migrate(self) -> list[str]:
        """Apply pending ``sql/NNN_*.sql`` files in order; return the versions applied."""
        migrations = sorted(
            (match.group(1), path)
            for path in sql_dir().glob("*.sql")
            if (match := _MIGRATION_NAME.match(path.name))
        )
        if not migrations:
            raise ConfigError(f"no migrations found in {sql_dir()}; is the package installed?")
        applied_now: list[str] = []
        with self._migration_lock(), self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
                )
            conn.execute(
                sa.text(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version VARCHAR(16) PRIMARY KEY, name TEXT NOT NULL,"
                    " applied_at TIMESTAMP WITH TIME ZONE NOT NULL)"
                )
            )
            done = set(conn.execute(sa.text("SELECT version FROM schema_migrations")).scalars())
            for version, path in migrations:
                if version in done:
                    continue
                for statement in migration_statements(path.read_text(), self.dialect):
                    conn.execute(sa.text(statement))
                conn.execute(
                    sa.text(
                        "INSERT INTO schema_migrations (version, name, applied_at)"
                        " VALUES (:v, :n, :t)"
                    ),
                    {"v": version, "n": path.name, "t": utc_now()},
                )
                applied_now.append(version)
                log.info("applied warehouse migration %s", path.name)
        return applied_now

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """Serialise concurrent migrations of one SQLite file (two Airflow tasks starting at
        once). pysqlite runs DDL outside transactions, so the check-then-create in
        :meth:`migrate` needs a lock of its own; PostgreSQL uses an advisory lock instead."""
        database = self.engine.url.database if self.dialect == "sqlite" else None
        if not database or database == ":memory:":
            yield
            return
        with storage.file_lock(f"{database}.migrate-lock"):
            yield

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a read-only ad-hoc query and return rows as dicts. For tests and analysts at a
        Python prompt; the pipeline itself calls the warehouse's named methods."""
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(sql), dict(params or {}))]


def split_sql(script: str) -> Iterator[str]:
    """Statements of a migration file: split at ';' ending a line, '--' comments dropped."""
    for _dialect, statement in _tagged_statements(script):
        yield statement


def migration_statements(script: str, dialect: str) -> Iterator[str]:
    """The statements of a migration file that ``dialect`` runs.

    One file serves both databases. Two things differ, and the file says which:

    * ``COMMENT ON ...`` (the PostgreSQL catalogue's documentation of tables, views and
      columns) runs on PostgreSQL only: SQLite has no comments (the ``.sql`` file itself is
      their documentation there).
    * A statement preceded by a line ``-- only: postgresql`` (or ``-- only: sqlite``) runs on
      that database only, for what has no common syntax (triggers, for example).
    """
    for only, statement in _tagged_statements(script):
        if only is not None and only != dialect:
            continue
        if dialect != "postgresql" and _COMMENT_ON.match(statement):
            continue
        yield statement


_ONLY_TAG = re.compile(r"^\s*--\s*only:\s*([a-z]+)\s*$")
_COMMENT_ON = re.compile(r"^\s*COMMENT\s+ON\s", re.IGNORECASE)


def _tagged_statements(script: str) -> Iterator[tuple[str | None, str]]:
    """(dialect named by a ``-- only:`` line before it, or None; statement) for each statement,
    split at ';' ending a line, '--' comments dropped."""
    statement: list[str] = []
    only: str | None = None
    for raw in script.splitlines():
        if not statement and (tag := _ONLY_TAG.match(raw)):
            only = tag.group(1)
            continue
        line = raw.split("--", 1)[0].rstrip()
        if not line.strip():
            continue
        statement.append(line)
        if line.endswith(";"):
            yield only, "\n".join(statement)[:-1]
            statement, only = [], None
    if any(s.strip() for s in statement):
        yield only, "\n".join(statement)


def _make_engine(url: str) -> Engine:
    engine = sa.create_engine(url, pool_pre_ping=True, future=True)
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets readers (analysts, the summary) run while a stage writes; the busy timeout
            # makes concurrent Airflow tasks wait for the write lock instead of failing.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            try:
                cursor.execute("SELECT ln(1.0)")
            except sqlite3.OperationalError:
                # SQLite built without its math functions: the drift view needs ln().
                dbapi_connection.create_function("ln", 1, math.log, deterministic=True)
            cursor.close()

    return engine


def redact_url(url: str) -> str:
    """``url`` with its password shown as ``***`` (as it is safe to print or log)."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url
