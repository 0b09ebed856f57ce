"""Registered versions by name, and rollback of the production alias."""

from __future__ import annotations

import logging

from pipeline.errors import ConfigError
from pipeline.warehouse.database import ModelRecord, Warehouse

log = logging.getLogger(__name__)


def get_model(warehouse: Warehouse, version: str) -> ModelRecord:
    """The registered version ``version``.

    Raises:
        ConfigError: no such version (the message lists the known ones).
    """
    record = warehouse.model(version)
    if record is None:
        known = ", ".join(m.model_version for m in warehouse.models()) or "none"
        raise ConfigError(f"no model version {version!r} (known: {known})")
    return record


def rollback(warehouse: Warehouse) -> ModelRecord:
    """Put the previously promoted version back into production."""
    current = warehouse.production_model()
    previous = [
        m
        for m in warehouse.models()
        if m.stage == "archived"
        and m.promoted_at is not None
        and (current is None or m.model_version != current.model_version)
    ]
    if not previous:
        raise ConfigError("no earlier production model to roll back to")
    target = max(previous, key=lambda m: str(m.promoted_at))
    warehouse.promote_model(target.model_version)
    log.info(
        "rolled back production from %s to %s",
        current.model_version if current else None,
        target.model_version,
    )
    return target
