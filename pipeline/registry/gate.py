"""The promotion gate: may a candidate version replace the production model?

A new version goes to production only when its macro-F1 on the *current* test split is at least
the production model's macro-F1 on the same clips, plus a configurable margin. Both models are
evaluated side by side at gate time (the test split may have grown since production was
trained), on the test clips both can read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.features.store import FeatureStore
from pipeline.model.metrics import classification_metrics
from pipeline.registry.artifacts import load_version
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


def clip_predictions(
    record: ModelRecord, clips: Sequence[ClipRecord], features_root: str
) -> dict[str, npt.NDArray[np.float32]]:
    """Averaged probabilities per clip from a registered version (clips it cannot read are
    absent)."""
    from pipeline.model.inference import predict_clips

    version = load_version(record)
    store = FeatureStore(features_root, record.settings_hash)
    return predict_clips(
        version.model, version.kind, clips, version.streams, store=store, spec=version.spec
    )


def promotion_gate(
    candidate: ModelRecord,
    warehouse: Warehouse,
    features_root: str,
    *,
    margin: float = 0.0,
) -> GateDecision:
    """Decide whether ``candidate`` may replace the production model (promotes nothing)."""
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
    ours_f1, theirs_f1 = _macro_f1s(candidate, production, common, ours, theirs)
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


def _macro_f1s(
    candidate: ModelRecord,
    production: ModelRecord,
    common: Sequence[ClipRecord],
    ours: dict[str, npt.NDArray[np.float32]],
    theirs: dict[str, npt.NDArray[np.float32]],
) -> tuple[float, float]:
    """Macro-F1 of both models on ``common`` clips, over the union of their classes (a model
    never predicts a class it does not know, and that counts against it)."""
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

    return macro_f1(candidate, ours), macro_f1(production, theirs)
