"""Stage 4, score: predictions from the production model for clips that lack one.

Every ``ok`` clip with features for the production model's settings hash and no prediction from
that model version gets one ``predictions`` row (label, confidence, all class probabilities,
model version, run id and logical date). Scoring again adds nothing; a run with nothing to do
loads no model and imports no TensorFlow.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np

from pipeline.errors import NoProductionModelError
from pipeline.feature_store import FeatureStore
from pipeline.progress import NullProgress, Progress
from pipeline.warehouse import ClipRecord, Warehouse, utc_now

log = logging.getLogger(__name__)

#: Clips scored per model call and per warehouse transaction.
CHUNK_CLIPS = 512


@dataclass
class ScoreSummary:
    model_version: str
    candidates: int = 0  # ok clips
    already_scored: int = 0
    scored: int = 0
    missing_features: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_clips(
    clips: list[ClipRecord],
    warehouse: Warehouse,
    features_root: str,
    *,
    run_id: str,
    logical_date: datetime | None,
    progress: Progress | None = None,
) -> ScoreSummary:
    """Score ``clips`` that have no prediction from the production model.

    Raises:
        NoProductionModelError: no model version has been promoted yet.
    """
    progress = progress or NullProgress()
    production = warehouse.production_model()
    if production is None:
        raise NoProductionModelError(
            "no production model yet: train one with `stpipe train` (or trigger the "
            "model_training DAG); the first trained version becomes production"
        )
    summary = ScoreSummary(model_version=production.model_version, candidates=len(clips))
    scored = warehouse.scored_clip_ids(production.model_version)
    pending = [c for c in clips if c.clip_id not in scored]
    summary.already_scored = len(clips) - len(pending)
    if not pending:
        log.info("score: all %d clips already scored by %s", len(clips), production.model_version)
        return summary

    store = FeatureStore(features_root, production.settings_hash)
    features = store.read_features(c.clip_id for c in pending)
    ready = [c for c in pending if c.clip_id in features]
    summary.missing_features = len(pending) - len(ready)
    if summary.missing_features:
        log.warning(
            "score: %d clips have no features for %s's settings (%s); run `stpipe extract`",
            summary.missing_features,
            production.model_version,
            production.settings_hash,
        )
    if not ready:
        return summary

    from pipeline.model import load_classifier, predict_probabilities

    model = load_classifier(f"{production.model_uri}/model.keras")
    names = production.class_names
    scored_at = utc_now()
    progress.start("score", len(ready), "clips")
    for start in range(0, len(ready), CHUNK_CLIPS):
        chunk = ready[start : start + CHUNK_CLIPS]
        probabilities = predict_probabilities(model, [features[c.clip_id].features for c in chunk])
        rows = []
        for clip, probs in zip(chunk, probabilities, strict=True):
            best = int(np.argmax(probs))
            rows.append(
                {
                    "clip_id": clip.clip_id,
                    "model_version": production.model_version,
                    "predicted_label": names[best],
                    "confidence": float(probs[best]),
                    "probabilities": {
                        n: round(float(p), 6) for n, p in zip(names, probs, strict=True)
                    },
                    "scored_at": scored_at,
                    "run_id": run_id,
                    "logical_date": logical_date,
                }
            )
        summary.scored += warehouse.upsert_predictions(rows)
        progress.advance(len(chunk))
    progress.finish()
    log.info(
        "score: %d clips scored by %s (%d already scored, %d without features)",
        summary.scored,
        production.model_version,
        summary.already_scored,
        summary.missing_features,
    )
    return summary
