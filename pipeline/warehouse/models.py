"""The model registry: ``model_versions`` (every trained version, and which one is in
production) and ``model_version_reservations`` (version names handed out)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pipeline.errors import ConfigError, InfrastructureError
from pipeline.warehouse.connection import WarehouseConnection, utc_now

_MODEL_COLUMNS = (
    "model_version, model_uri, settings_hash, fingerprint, class_names, metrics, stage,"
    " created_at, streams, promoted_at"
)


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


class ModelsSql(WarehouseConnection):
    """Registering, naming, finding and promoting model versions."""

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
        """Insert a ``model_versions`` row; a version already registered is left unchanged."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO model_versions (model_version, model_uri, settings_hash,"
                    " fingerprint, class_names, metrics, stage, created_at, streams)"
                    " VALUES (:v, :u, :h, :f, :c, :m, :s, :t, :streams)"
                    " ON CONFLICT (model_version) DO NOTHING"
                ),
                {
                    "v": model_version,
                    "u": model_uri,
                    "h": settings_hash,
                    "f": fingerprint,
                    "c": json.dumps(list(class_names)),
                    "m": json.dumps(dict(metrics), sort_keys=True),
                    "s": stage,
                    "t": utc_now(),
                    "streams": json.dumps(list(streams)),
                },
            )

    def record_training_clips(
        self, model_version: str, clips: Iterable[tuple[str, str, str]]
    ) -> int:
        """Record which clips ``model_version`` was trained, validated and tested on: rows of
        ``model_training_clips`` from ``(clip_id, split, label)``. Called before the version is
        registered, so a registered version always has its record; idempotent (a rerun
        replaces the rows). The analyst views judge a model on clips outside its train and
        val splits, and its drift against its train split's labels."""
        rows = [
            {"v": model_version, "c": clip_id, "s": split, "l": label}
            for clip_id, split, label in sorted(clips)
        ]
        if not rows:
            return 0
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO model_training_clips (model_version, clip_id, split, label)"
                    " VALUES (:v, :c, :s, :l) ON CONFLICT (model_version, clip_id)"
                    " DO UPDATE SET split = excluded.split, label = excluded.label"
                ),
                rows,
            )
        return len(rows)

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
        """Every registered version, oldest first."""
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
        """The newest version trained with ``fingerprint`` (the same data and parameters)."""
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
        """The version named ``model_version``, or None if it is not registered."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.text(f"SELECT {_MODEL_COLUMNS} FROM model_versions WHERE model_version = :v"),
                {"v": model_version},
            ).first()
        return _model_record(row._mapping) if row else None


def _model_record(row: Mapping[Any, Any]) -> ModelRecord:
    values = dict(row)
    values["class_names"] = json.loads(values["class_names"])
    values["metrics"] = json.loads(values["metrics"])
    values["streams"] = json.loads(values["streams"] or "[]")
    return ModelRecord(**values)
