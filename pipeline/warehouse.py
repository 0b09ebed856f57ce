"""The SQL warehouse: media catalogue, model registry and predictions.

One SQLAlchemy engine (embedded SQLite by default, PostgreSQL in production). The schema is the
numbered plain-SQL files in ``sql/``; :meth:`Warehouse.migrate` applies the ones not yet applied,
in order, each in its own transaction. Writes are upserts on natural keys, so re-running a
stage replaces rows rather than adding them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Serialises concurrent migrations on PostgreSQL (two Airflow tasks starting at once).
_PG_MIGRATION_LOCK = 7_391_522


def sql_dir() -> Path:
    """The ``sql/`` folder: inside the installed wheel, or at the repository root."""
    packaged = Path(__file__).with_name("sql")
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[1] / "sql"


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
            warehouse.migrate()
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
        with open(f"{database}.migrate-lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

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
        payload = [
            {**row, "probabilities": json.dumps(row["probabilities"], sort_keys=True)}
            for row in rows
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
