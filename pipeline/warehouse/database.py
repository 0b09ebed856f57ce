"""The SQL warehouse: media catalogue, model registry and predictions.

One SQLAlchemy engine (embedded SQLite by default, PostgreSQL in production). The schema is the
numbered plain-SQL files in ``sql/``; :meth:`Warehouse.migrate` applies the ones not yet applied,
in order, each in its own transaction. Writes are upserts on natural keys, so re-running a
stage replaces rows rather than adding them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline import storage
from pipeline.errors import ConfigError, InfrastructureError, infrastructure_problem

log = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Serialises concurrent migrations on PostgreSQL (two Airflow tasks starting at once).
_PG_MIGRATION_LOCK = 7_391_522
_PG_ROLES_LOCK = 7_391_523
#: The PostgreSQL login roles `stpipe warehouse roles` manages.
WRITER_ROLE = "stpipe_writer"
ANALYST_ROLE = "stpipe_analyst"


def sql_dir() -> Path:
    """The ``sql/`` folder: inside the installed wheel, or at the repository root."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "sql"
    return packaged if packaged.is_dir() else package.parent / "sql"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ClipRecord:
    """A row of ``media_files`` as the stages need it."""

    clip_id: str
    uri: str
    media_uri: str | None
    modality: str | None
    label: str | None
    split: str
    status: str
    error: str | None
    duration_seconds: float | None


@dataclass(frozen=True)
class ModelRecord:
    """A row of ``model_versions``."""

    model_version: str
    model_uri: str
    settings_hash: str
    fingerprint: str
    class_names: list[str]
    metrics: dict[str, Any]
    stage: str
    created_at: Any
    streams: list[str]
    promoted_at: Any = None


class Warehouse:
    """All SQL the pipeline runs. Construct with :meth:`connect`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def connect(cls, url: str, *, migrate: bool = True) -> Warehouse:
        """Open the warehouse at ``url`` and bring its schema up to date."""
        try:
            engine = _make_engine(url)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise ConfigError(
                f"cannot use warehouse URL {_redact(url)!r}: {exc}. Expected e.g. "
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
                    f"cannot open the warehouse {_redact(url)}: {problem}"
                ) from exc
        return warehouse

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def dispose(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.dispose()

    # Schema -------------------------------------------------------------------------------

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
                for statement in split_sql(path.read_text()):
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

    # Media catalogue ----------------------------------------------------------------------

    def known_sources(self) -> dict[str, tuple[int, float, str, str | None]]:
        """uri -> (size, mtime, clip_id, label) for every file seen before."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT uri, size_bytes, mtime, clip_id, label FROM media_sources")
            )
            return {r.uri: (int(r.size_bytes), float(r.mtime), r.clip_id, r.label) for r in rows}

    def get_clip(self, clip_id: str) -> ClipRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.text(f"SELECT {_CLIP_COLUMNS} FROM media_files WHERE clip_id = :c"),
                {"c": clip_id},
            ).first()
        return ClipRecord(**row._mapping) if row else None

    def add_clip(self, row: Mapping[str, Any]) -> bool:
        """Insert a new ``media_files`` row; return False (and change nothing) if it exists."""
        now = utc_now()
        values = {**row, "ingested_at": now, "updated_at": now}
        columns = ", ".join(values)
        params = ", ".join(f":{k}" for k in values)
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.text(
                    f"INSERT INTO media_files ({columns}) VALUES ({params})"
                    " ON CONFLICT (clip_id) DO NOTHING"
                ),
                values,
            )
            return bool(result.rowcount)

    def set_label_if_missing(self, clip_id: str, label: str) -> bool:
        """Give an unlabelled clip its label; never overwrite an existing label."""
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.text(
                    "UPDATE media_files SET label = :l, updated_at = :t"
                    " WHERE clip_id = :c AND label IS NULL"
                ),
                {"c": clip_id, "l": label, "t": utc_now()},
            )
            return bool(result.rowcount)

    def set_split(self, clip_id: str, split: str) -> None:
        """Move a clip to another split (a manifest decided so)."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE media_files SET split = :s, updated_at = :t WHERE clip_id = :c"),
                {"c": clip_id, "s": split, "t": utc_now()},
            )

    def record_source(
        self, uri: str, clip_id: str, size_bytes: int, mtime: float, label: str | None
    ) -> None:
        now = utc_now()
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO media_sources"
                    " (uri, clip_id, size_bytes, mtime, label, first_seen_at, last_seen_at)"
                    " VALUES (:u, :c, :s, :m, :l, :t, :t)"
                    " ON CONFLICT (uri) DO UPDATE SET clip_id = excluded.clip_id,"
                    " size_bytes = excluded.size_bytes, mtime = excluded.mtime,"
                    " label = excluded.label, last_seen_at = excluded.last_seen_at"
                ),
                {"u": uri, "c": clip_id, "s": size_bytes, "m": mtime, "l": label, "t": now},
            )

    def quarantine_clip(self, clip_id: str, error: str) -> None:
        """Mark a clip bad (for example, it probed but fails to decode) with the reason."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE media_files SET status = 'quarantined', error = :e, updated_at = :t"
                    " WHERE clip_id = :c"
                ),
                {"c": clip_id, "e": error, "t": utc_now()},
            )

    def clips(self, *, status: str | None = "ok", labelled: bool | None = None) -> list[ClipRecord]:
        """Clips in clip-id order, filtered by status and by whether they carry a label."""
        clauses, params = [], {}
        if status is not None:
            clauses.append("status = :status")
            params["status"] = status
        if labelled is True:
            clauses.append("label IS NOT NULL")
        elif labelled is False:
            clauses.append("label IS NULL")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(f"SELECT {_CLIP_COLUMNS} FROM media_files{where} ORDER BY clip_id"), params
            )
            return [ClipRecord(**r._mapping) for r in rows]

    def clip_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT status, COUNT(*) AS n FROM media_files GROUP BY status")
            )
            return {r.status: int(r.n) for r in rows}

    # Model registry -----------------------------------------------------------------------

    def register_model(
        self,
        *,
        model_version: str,
        model_uri: str,
        settings_hash: str,
        fingerprint: str,
        class_names: Sequence[str],
        metrics: Mapping[str, Any],
        streams: Sequence[str],
        stage: str = "candidate",
    ) -> None:
        now = utc_now()
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO model_versions (model_version, model_uri, settings_hash,"
                    " fingerprint, class_names, metrics, test_accuracy, stage, created_at,"
                    " streams)"
                    " VALUES (:v, :u, :h, :f, :c, :m, :a, :s, :t, :streams)"
                    " ON CONFLICT (model_version) DO NOTHING"
                ),
                {
                    "v": model_version,
                    "u": model_uri,
                    "h": settings_hash,
                    "f": fingerprint,
                    "c": json.dumps(list(class_names)),
                    "m": json.dumps(dict(metrics), sort_keys=True),
                    "a": metrics.get("accuracy"),
                    "s": stage,
                    "t": now,
                    "streams": json.dumps(list(streams)),
                },
            )

    def reserve_model_version(self, fingerprint: str, *, attempts: int = 20) -> str:
        """A version name (``v0001``, ``v0002``, ...) for the model trained with
        ``fingerprint``, reserved atomically: two trainings at once never get the same name
        (the primary key refuses the second insert, which retries with the next number). A
        reservation of the same fingerprint that was never registered (its run was killed) is
        handed back, so a rerun ends with the name a clean run would have given."""
        for _ in range(attempts):
            with contextlib.suppress(sa.exc.IntegrityError), self.engine.begin() as conn:
                earlier = conn.execute(
                    sa.text(
                        "SELECT r.model_version FROM model_version_reservations r"
                        " LEFT JOIN model_versions v ON v.model_version = r.model_version"
                        " WHERE r.fingerprint = :f AND v.model_version IS NULL"
                        " ORDER BY r.model_version"
                    ),
                    {"f": fingerprint},
                ).first()
                if earlier is not None:
                    return str(earlier.model_version)
                taken = conn.execute(
                    sa.text("SELECT model_version FROM model_version_reservations")
                ).scalars()
                numbers = [int(v[1:]) for v in taken if v.startswith("v") and v[1:].isdigit()]
                version = f"v{max(numbers, default=0) + 1:04d}"
                conn.execute(
                    sa.text(
                        "INSERT INTO model_version_reservations"
                        " (model_version, fingerprint, reserved_at) VALUES (:v, :f, :t)"
                    ),
                    {"v": version, "f": fingerprint, "t": utc_now()},
                )
                return version
        raise InfrastructureError(
            f"could not reserve a model version after {attempts} attempts (too many trainings "
            "registering at once?); re-run the training"
        )

    def promote_model(self, model_version: str) -> None:
        """Make ``model_version`` the production model; the previous one becomes archived."""
        now = utc_now()
        with self.engine.begin() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM model_versions WHERE model_version = :v"),
                {"v": model_version},
            ).first()
            if not exists:
                raise ConfigError(f"model version {model_version!r} is not registered")
            conn.execute(
                sa.text(
                    "UPDATE model_versions SET stage = 'archived'"
                    " WHERE stage = 'production' AND model_version <> :v"
                ),
                {"v": model_version},
            )
            conn.execute(
                sa.text(
                    "UPDATE model_versions SET stage = 'production', promoted_at = :t"
                    " WHERE model_version = :v"
                ),
                {"v": model_version, "t": now},
            )

    def models(self) -> list[ModelRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    f"SELECT {_MODEL_COLUMNS} FROM model_versions"
                    " ORDER BY created_at, model_version"
                )
            )
            return [_model_record(r._mapping) for r in rows]

    def production_model(self) -> ModelRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.text(f"SELECT {_MODEL_COLUMNS} FROM model_versions WHERE stage = 'production'")
            ).first()
        return _model_record(row._mapping) if row else None

    def model_with_fingerprint(self, fingerprint: str) -> ModelRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    f"SELECT {_MODEL_COLUMNS} FROM model_versions WHERE fingerprint = :f"
                    " ORDER BY created_at DESC"
                ),
                {"f": fingerprint},
            ).first()
        return _model_record(row._mapping) if row else None

    def model(self, model_version: str) -> ModelRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.text(f"SELECT {_MODEL_COLUMNS} FROM model_versions WHERE model_version = :v"),
                {"v": model_version},
            ).first()
        return _model_record(row._mapping) if row else None

    # Work claims --------------------------------------------------------------------------

    def claim_work(
        self,
        resources: Sequence[str],
        owner: str,
        *,
        stale: Callable[[str, datetime], bool],
    ) -> set[str]:
        """Claim ``resources`` for ``owner``; return those it now holds (including ones it held
        already). A claim of another owner is taken over when ``stale(owner, heartbeat_at)``."""
        mine: set[str] = set()
        now = utc_now()
        for chunk in _chunks(resources, 500):
            with self.engine.begin() as conn:
                held = conn.execute(
                    sa.text(
                        "SELECT resource, owner, heartbeat_at FROM work_claims WHERE resource IN :r"
                    ).bindparams(sa.bindparam("r", expanding=True)),
                    {"r": list(chunk)},
                ).all()
                for row in held:
                    if row.owner != owner and stale(row.owner, _as_datetime(row.heartbeat_at)):
                        log.info("taking over %s from %s (gone)", row.resource, row.owner)
                        conn.execute(
                            sa.text("DELETE FROM work_claims WHERE resource = :r AND owner = :o"),
                            {"r": row.resource, "o": row.owner},
                        )
                conn.execute(
                    sa.text(
                        "INSERT INTO work_claims (resource, owner, claimed_at, heartbeat_at)"
                        " VALUES (:r, :o, :t, :t) ON CONFLICT (resource) DO NOTHING"
                    ),
                    [{"r": r, "o": owner, "t": now} for r in chunk],
                )
                mine.update(
                    conn.execute(
                        sa.text(
                            "SELECT resource FROM work_claims WHERE owner = :o AND resource IN :r"
                        ).bindparams(sa.bindparam("r", expanding=True)),
                        {"o": owner, "r": list(chunk)},
                    ).scalars()
                )
        return mine

    def renew_claims(self, owner: str) -> None:
        """Heartbeat: every claim of ``owner`` stays valid for another lease."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE work_claims SET heartbeat_at = :t WHERE owner = :o"),
                {"o": owner, "t": utc_now()},
            )

    def release_work(self, resources: Iterable[str], owner: str) -> None:
        for chunk in _chunks(list(resources), 500):
            with self.engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "DELETE FROM work_claims WHERE owner = :o AND resource IN :r"
                    ).bindparams(sa.bindparam("r", expanding=True)),
                    {"o": owner, "r": list(chunk)},
                )

    # Predictions --------------------------------------------------------------------------

    def scored_clip_ids(self, model_version: str) -> set[str]:
        with self.engine.connect() as conn:
            return set(
                conn.execute(
                    sa.text("SELECT clip_id FROM predictions WHERE model_version = :v"),
                    {"v": model_version},
                ).scalars()
            )

    def upsert_predictions(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert or replace clip-level prediction rows keyed on (clip_id, model_version)."""
        return self._upsert(
            "predictions",
            ("clip_id", "model_version"),
            [{"n_segments": 1, **row} for row in rows],
            (*_PREDICTION_COLUMNS, "n_segments"),
        )

    def upsert_segment_predictions(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert or replace per-segment rows keyed on (clip_id, segment_index, model_version)."""
        return self._upsert(
            "segment_predictions",
            ("clip_id", "segment_index", "model_version"),
            list(rows),
            (*_PREDICTION_COLUMNS, "n_segments", "start_seconds", "end_seconds"),
        )

    def _upsert(
        self,
        table: str,
        keys: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
        columns: Sequence[str],
    ) -> int:
        """``INSERT ... ON CONFLICT (keys) DO UPDATE`` (SQLite >= 3.24 and PostgreSQL alike);
        ``probabilities`` dicts are stored as JSON text."""
        if not rows:
            return 0
        names = [*keys, *(c for c in columns if c not in keys)]
        # Key order: two runs upserting overlapping rows lock them in the same order, so
        # PostgreSQL never sees them deadlock.
        ordered = sorted(rows, key=lambda row: tuple(row[k] for k in keys))
        payload = [
            {**row, "probabilities": json.dumps(row["probabilities"], sort_keys=True)}
            for row in ordered
        ]
        updates = ", ".join(f"{c} = excluded.{c}" for c in names if c not in keys)
        statement = (
            f"INSERT INTO {table} ({', '.join(names)})"
            f" VALUES ({', '.join(':' + c for c in names)})"
            f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
        )
        with self.engine.begin() as conn:
            conn.execute(sa.text(statement), payload)
        return len(payload)

    # Roles (PostgreSQL) ---------------------------------------------------------------------

    def ensure_roles(self, writer_password: str, analyst_password: str) -> list[str]:
        """Create or update the warehouse's two login roles (idempotent; needs a connection
        that may create roles, e.g. the database owner or a superuser):

        * ``stpipe_writer``: what the pipeline connects as. It owns the pipeline's tables and
          views (so it can run later migrations) and may create objects in schema ``public``.
        * ``stpipe_analyst``: ``SELECT`` on every table and view, now and (default
          privileges) on those later migrations create; nothing else: no writes, no DDL, no
          temporary tables, read-only transactions by default.

        ``PUBLIC`` loses every privilege on the database and ``CREATE`` on schema ``public``.
        Returns the statements run, passwords masked.

        Raises:
            ConfigError: the warehouse is not PostgreSQL, or a password is empty.
        """
        if self.dialect != "postgresql":
            raise ConfigError(
                "roles need a PostgreSQL warehouse; SQLite has no users (give analysts a "
                "read-only copy, or open it with `sqlite3 -readonly`)"
            )
        if not writer_password or not analyst_password:
            raise ConfigError(
                "set PIPELINE_WAREHOUSE_WRITER_PASSWORD and PIPELINE_WAREHOUSE_ANALYST_PASSWORD "
                "(e.g. from docker/.env) before creating the roles"
            )
        self.migrate()  # the objects must exist before their ownership and grants are set
        with self.engine.connect() as conn:
            database = conn.execute(sa.text("SELECT current_database()")).scalar_one()
            objects = conn.execute(
                sa.text(
                    "SELECT c.relname, c.relkind FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm', 'S')"
                    " ORDER BY c.relname"
                )
            ).all()
        kinds = {"r": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE"}
        db = _quote_ident(database)
        statements = [
            *_create_login_role(WRITER_ROLE, writer_password),
            *_create_login_role(ANALYST_ROLE, analyst_password),
            f"ALTER ROLE {ANALYST_ROLE} SET default_transaction_read_only = on",
            f"REVOKE ALL ON DATABASE {db} FROM PUBLIC",
            f"GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {WRITER_ROLE}",
            f"GRANT CONNECT ON DATABASE {db} TO {ANALYST_ROLE}",
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            f"GRANT USAGE, CREATE ON SCHEMA public TO {WRITER_ROLE}",
            f"GRANT USAGE ON SCHEMA public TO {ANALYST_ROLE}",
            *(
                f"ALTER {kinds[kind]} public.{_quote_ident(name)} OWNER TO {WRITER_ROLE}"
                for name, kind in objects
            ),
            f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {ANALYST_ROLE}",
            f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {ANALYST_ROLE}",
            f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ANALYST_ROLE}",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {WRITER_ROLE} IN SCHEMA public"
            f" GRANT SELECT ON TABLES TO {ANALYST_ROLE}",
        ]
        with self.engine.begin() as conn:
            # Role names are cluster-wide: serialise with other databases doing the same.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_ROLES_LOCK})
            for statement in statements:
                conn.exec_driver_sql(statement)
        masked = [re.sub(r"PASSWORD '(?:[^']|'')*'", "PASSWORD '***'", s) for s in statements]
        log.info("warehouse roles %s and %s are set up on %s", WRITER_ROLE, ANALYST_ROLE, database)
        return masked

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a read-only query (used by summaries and tests) and return rows as dicts."""
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(sql), dict(params or {}))]


_PREDICTION_COLUMNS = (
    "model_version",
    "predicted_label",
    "confidence",
    "probabilities",
    "scored_at",
    "run_id",
    "logical_date",
)
_CLIP_COLUMNS = "clip_id, uri, media_uri, modality, label, split, status, error, duration_seconds"
_MODEL_COLUMNS = (
    "model_version, model_uri, settings_hash, fingerprint, class_names, metrics, stage,"
    " created_at, streams, promoted_at"
)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _create_login_role(role: str, password: str) -> list[str]:
    """Statements that create ``role`` if missing and (re)set its password. DDL takes no bind
    parameters, so the password is quoted as a literal (standard_conforming_strings is on)."""
    if "\x00" in password:
        raise ConfigError(f"the password for {role} contains a NUL character")
    return [
        "DO $$ BEGIN"
        f" IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN"
        f" CREATE ROLE {role} LOGIN; END IF; END $$",
        f"ALTER ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
        f" PASSWORD {_quote_literal(password)}",
    ]


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _as_datetime(value: Any) -> datetime:
    """A timestamp column as an aware datetime (SQLite hands back text)."""
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _model_record(row: Mapping[Any, Any]) -> ModelRecord:
    values = dict(row)
    values["class_names"] = json.loads(values["class_names"])
    values["metrics"] = json.loads(values["metrics"])
    values["streams"] = json.loads(values["streams"] or "[]")
    return ModelRecord(**values)


def split_sql(script: str) -> Iterator[str]:
    """Statements of a migration file: split at ';' ending a line, '--' comments dropped."""
    lines = [line.split("--", 1)[0].rstrip() for line in script.splitlines()]
    statement: list[str] = []
    for line in lines:
        if not line.strip():
            continue
        statement.append(line)
        if line.endswith(";"):
            yield "\n".join(statement)[:-1]
            statement = []
    if any(s.strip() for s in statement):
        yield "\n".join(statement)


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
            cursor.close()

    return engine


def _redact(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url
