"""Stage 4, score: predictions from the production model for clips that lack one.

Every ``ok`` clip with features for the production model's settings hash and no prediction from
that model version gets one ``predictions`` row (label, confidence, all class probabilities,
model version, run id and logical date) averaged over its segments, and one
``segment_predictions`` row per segment (with its start and end times). Scoring again adds
nothing; a run with nothing to do loads no model and imports no TensorFlow.

Clips are scored in chunks, each written in one transaction. A chunk that fails is scored again
clip by clip, so a clip that cannot be scored is quarantined with the reason and the rest go on;
an infrastructure failure (the warehouse connection lost) stops the run with an error that says
so. Rows already written stay, and the re-run scores only what is missing. Two runs at once
leave one row per (clip, model version): writes are upserts on that key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np

from pipeline.errors import (
    InfrastructureError,
    NoProductionModelError,
    describe,
    infrastructure_problem,
)
from pipeline.features.store import FeatureStore
from pipeline.progress import NullProgress, Progress
from pipeline.registry.artifacts import load_version
from pipeline.warehouse.database import ClipRecord, Warehouse, utc_now

log = logging.getLogger(__name__)


@dataclass
class ScoreSummary:
    model_version: str
    candidates: int = 0  # ok clips
    already_scored: int = 0
    scored: int = 0
    segments: int = 0
    missing_features: int = 0
    unscorable: int = 0  # features present but none in the streams the model reads
    quarantined: int = 0  # scoring them failed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_clips(
    clips: list[ClipRecord],
    warehouse: Warehouse,
    features_root: str,
    *,
    run_id: str,
    logical_date: datetime | None,
    quarantine: Callable[[str, str], None] | None = None,
    progress: Progress | None = None,
    chunk_clips: int = 512,
) -> ScoreSummary:
    """Score ``clips`` that have no prediction from the production model.

    Each segment gets a ``segment_predictions`` row; the clip's ``predictions`` row averages
    its segments' probabilities. ``quarantine(clip_id, reason)`` is called for a clip whose
    scoring fails (it is then left out).

    Raises:
        NoProductionModelError: no model version has been promoted yet.
        InfrastructureError: the warehouse (or memory) failed; what was written stays, re-run.
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
    streams = production.streams or ["video", "audio"]
    available = store.clip_ids()
    ready = [c for c in pending if c.clip_id in available]
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

    from pipeline.model.inference import average_segments, predict_segments

    version = load_version(production)
    names = production.class_names
    scored_at = utc_now()
    stamp = {
        "model_version": production.model_version,
        "scored_at": scored_at,
        "run_id": run_id,
        "logical_date": logical_date,
    }

    def predict(chunk: list[ClipRecord]) -> dict[str, Any]:
        return predict_segments(
            version.model, version.kind, chunk, streams, store=store, spec=version.spec
        )

    progress.start("score", len(ready), "clips")
    try:
        for start in range(0, len(ready), chunk_clips):
            chunk = ready[start : start + chunk_clips]
            by_clip, failed = _predict_isolated(predict, chunk, quarantine)
            summary.quarantined += len(failed)
            segment_rows = [
                {
                    **stamp,
                    **_labelled(names, probs),
                    "clip_id": seg.clip_id,
                    "segment_index": seg.segment_index,
                    "n_segments": seg.n_segments,
                    "start_seconds": seg.start_seconds,
                    "end_seconds": seg.end_seconds,
                }
                for rows in by_clip.values()
                for seg, probs in rows
            ]
            clip_rows = []
            for clip in chunk:
                scored_segments = by_clip.get(clip.clip_id)
                if not scored_segments:
                    summary.unscorable += clip.clip_id not in failed
                    continue
                mean = average_segments([probs for _, probs in scored_segments])
                clip_rows.append(
                    {
                        **stamp,
                        **_labelled(names, mean),
                        "clip_id": clip.clip_id,
                        "n_segments": len(scored_segments),
                    }
                )
            # Segment rows first: a clip row exists only once its segments do.
            warehouse.upsert_segment_predictions(segment_rows)
            summary.scored += warehouse.upsert_predictions(clip_rows)
            summary.segments += len(segment_rows)
            progress.advance(len(chunk))
    except Exception as exc:
        problem = infrastructure_problem(exc)
        if problem is None:
            raise
        raise InfrastructureError(
            f"scoring stopped after {summary.scored} clips: {problem}. The predictions written "
            "so far are complete; re-run `stpipe score` (or nightly_scoring) once fixed and it "
            "scores only the rest."
        ) from exc
    progress.finish()
    if summary.unscorable:
        log.warning(
            "score: %d clips have no %s features for %s",
            summary.unscorable,
            "/".join(streams),
            production.model_version,
        )
    log.info(
        "score: %d clips (%d segments) scored by %s (%d already scored, %d without features)",
        summary.scored,
        summary.segments,
        production.model_version,
        summary.already_scored,
        summary.missing_features,
    )
    return summary


def _predict_isolated(
    predict: Callable[[list[ClipRecord]], dict[str, Any]],
    chunk: list[ClipRecord],
    quarantine: Callable[[str, str], None] | None,
) -> tuple[dict[str, Any], set[str]]:
    """Predictions for ``chunk``, and the ids of clips that failed. If the chunk fails, its
    clips are scored one by one and those that fail are quarantined (infrastructure failures
    propagate)."""
    try:
        return predict(chunk), set()
    except Exception as exc:
        if infrastructure_problem(exc):
            raise
        log.warning("scoring %d clips failed (%s); scoring them one by one", len(chunk), exc)
    result: dict[str, Any] = {}
    failed: set[str] = set()
    for clip in chunk:
        try:
            result.update(predict([clip]))
        except Exception as exc:
            if infrastructure_problem(exc):
                raise
            reason = describe(exc)
            log.warning("quarantined clip %s (%s): %s", clip.clip_id[:12], clip.uri, reason)
            failed.add(clip.clip_id)
            if quarantine is not None:
                quarantine(clip.clip_id, reason)
    return result, failed


def _labelled(names: list[str], probabilities: Any) -> dict[str, Any]:
    best = int(np.argmax(probabilities))
    return {
        "predicted_label": names[best],
        "confidence": float(probabilities[best]),
        "probabilities": {n: round(float(p), 6) for n, p in zip(names, probabilities, strict=True)},
    }
