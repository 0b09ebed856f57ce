"""Promotion: the one path by which a version becomes the production model.

Training (``--promote`` / ``--no-promote`` / the gate), ``stpipe models promote`` (``--check`` /
``--force``) and the model_training DAG (its ``promotion_gate`` branch, then ``promote_model``)
all call :func:`promote_version`; the gate itself is :func:`pipeline.registry.gate.promotion_gate`.
"""

from __future__ import annotations

import logging
from typing import Literal

from pipeline.registry.gate import GateDecision, promotion_gate
from pipeline.warehouse.database import ModelRecord, Warehouse

log = logging.getLogger(__name__)

#: ``gate``: promote when the gate passes; ``force``: promote; ``never``: keep as a candidate.
PromotionMode = Literal["gate", "force", "never"]
PROMOTION_MODES: tuple[PromotionMode, ...] = ("gate", "force", "never")


def promote_version(
    warehouse: Warehouse,
    record: ModelRecord,
    *,
    mode: PromotionMode,
    features_root: str,
    margin: float = 0.0,
) -> GateDecision:
    """Make ``record`` the production model if ``mode`` says so (after the gate, by default);
    returns the decision with its reason."""
    version = record.model_version
    if mode == "never":
        return GateDecision(False, "promotion not requested (--no-promote)", version, margin=margin)
    if mode == "force":
        decision = GateDecision(True, "promoted by request (--promote)", version, margin=margin)
    else:
        decision = promotion_gate(record, warehouse, features_root, margin=margin)
    if decision.promote:
        warehouse.promote_model(version)
        log.info("%s promoted to production (%s)", version, decision.reason)
    return decision


def promotion_mode(promote: bool | None) -> PromotionMode:
    """``True`` forces, ``False`` never promotes, ``None`` runs the gate (the CLI flags)."""
    return "gate" if promote is None else "force" if promote else "never"
