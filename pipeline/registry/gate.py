"""The model registry: versions in the warehouse (``model_versions``) and on disk, the production
alias, the promotion gate, promotion and rollback.

A new version goes to production only when its macro-F1 on the *current* test split is at least
the production model's macro-F1 on the same clips, plus a configurable margin. Both models are
evaluated side by side at gate time (the test split may have grown since production was
trained), on the test clips both can read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline import storage
from pipeline.config import join_uri
from pipeline.errors import ConfigError
from pipeline.training.evaluation import classification_metrics
from pipeline.warehouse.database import ClipRecord, ModelRecord, Warehouse

log = logging.getLogger(__name__)


@dataclass
class GateDecision:
    promote: bool
    reason: str
    candidate: str
    production: str | None = None
    candidate_macro_f1: float | None = None
    production_macro_f1: float | None = None
    clips: int = 0
    margin: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_metadata(record: ModelRecord) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        storage.read_bytes(join_uri(record.model_uri, "metadata.json"))
    )
    return result


def clip_predictions(
    record: ModelRecord, clips: Sequence[ClipRecord], features_root: str
) -> dict[str, npt.NDArray[np.float32]]:
    """Mean segment probabilities per clip from a registered model version (clips it cannot read
    are absent)."""
    from pipeline.features.store import FeatureStore
    from pipeline.media.sequences import SequenceSpec
    from pipeline.model.architecture import load_classifier
    from pipeline.model.inputs import segment_predictions

    model = load_classifier(join_uri(record.model_uri, "model.keras"))
    metadata = read_metadata(record)
    spec = SequenceSpec(**metadata["sequence_spec"]) if metadata.get("sequence_spec") else None
    store = FeatureStore(features_root, record.settings_hash)
    available = store.clip_ids()
    readable = [c for c in clips if c.clip_id in available] if spec is None else list(clips)
    predictions = segment_predictions(model, readable, record.streams, store=store, spec=spec)
    return {
        clip_id: np.mean([probs for _, probs in rows], axis=0).astype(np.float32)
        for clip_id, rows in predictions.items()
    }


def promotion_gate(
    candidate: ModelRecord,
    warehouse: Warehouse,
    features_root: str,
    *,
    margin: float = 0.0,
) -> GateDecision:
    """Decide whether ``candidate`` may replace the production model."""
    production = warehouse.production_model()
    if production is None:
        return GateDecision(True, "no production model yet", candidate.model_version, margin=margin)
    if production.model_version == candidate.model_version:
        return GateDecision(
            False,
            "already in production",
            candidate.model_version,
            production.model_version,
            margin=margin,
        )
    test = [c for c in warehouse.clips(status="ok", labelled=True) if c.split == "test"]
    ours = clip_predictions(candidate, test, features_root)
    theirs = clip_predictions(production, test, features_root)
    common = [c for c in test if c.clip_id in ours and c.clip_id in theirs]
    if not common:
        return GateDecision(
            False,
            "no test clips both models can read; promote by hand (`stpipe models promote`)",
            candidate.model_version,
            production.model_version,
            margin=margin,
        )
    classes = sorted(
        {str(c.label) for c in common} | set(candidate.class_names) | set(production.class_names)
    )
    index = {name: i for i, name in enumerate(classes)}
    y_true = np.array([index[str(c.label)] for c in common])

    def macro_f1(record: ModelRecord, probabilities: dict[str, npt.NDArray[np.float32]]) -> float:
        y_pred = np.array(
            [index[record.class_names[int(np.argmax(probabilities[c.clip_id]))]] for c in common]
        )
        return float(classification_metrics(y_true, y_pred, classes)["macro_f1"] or 0.0)

    ours_f1, theirs_f1 = macro_f1(candidate, ours), macro_f1(production, theirs)
    promote = ours_f1 >= theirs_f1 + margin
    verdict = "at least" if promote else "below"
    decision = GateDecision(
        promote,
        f"macro-F1 {ours_f1:.4f} is {verdict} production's {theirs_f1:.4f} + margin {margin:g} "
        f"on {len(common)} test clips",
        candidate.model_version,
        production.model_version,
        ours_f1,
        theirs_f1,
        len(common),
        margin,
    )
    log.info("promotion gate for %s: %s", candidate.model_version, decision.reason)
    return decision


def get_model(warehouse: Warehouse, version: str) -> ModelRecord:
    for record in warehouse.models():
        if record.model_version == version:
            return record
    known = ", ".join(m.model_version for m in warehouse.models()) or "none"
    raise ConfigError(f"no model version {version!r} (known: {known})")


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
