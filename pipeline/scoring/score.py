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
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import (
    InfrastructureError,
    NoProductionModelError,
    describe,
    infrastructure_problem,
)
from pipeline.features.store import FeatureStore, SegmentFeatures
from pipeline.progress import NullProgress, Progress
from pipeline.registry.artifacts import LoadedVersion, load_version, model_kind, read_metadata
from pipeline.warehouse.database import ClipRecord, ModelRecord, Warehouse, utc_now

if TYPE_CHECKING:
    from pipeline.model.inference import SegmentProbabilities

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
    ready = _clips_with_inputs(pending, production, store, summary)
    if ready:
        scorer = _Scorer(load_version(production), store, run_id, logical_date)
        progress.start("score", len(ready), "clips")
        try:
            for start in range(0, len(ready), chunk_clips):
                scorer.score_chunk(
                    ready[start : start + chunk_clips], warehouse, summary, quarantine
                )
                progress.advance(min(chunk_clips, len(ready) - start))
        except Exception as exc:
            problem = infrastructure_problem(exc)
            if problem is None:
                raise
            raise InfrastructureError(
                f"scoring stopped after {summary.scored} clips: {problem}. The predictions "
                "written so far are complete; re-run `stpipe score` (or nightly_scoring) once "
                "fixed and it scores only the rest."
            ) from exc
        progress.finish()
    _log_summary(summary, production)
    return summary


def _clips_with_inputs(
    pending: list[ClipRecord], production: ModelRecord, store: FeatureStore, summary: ScoreSummary
) -> list[ClipRecord]:
    """The pending clips the model can read: all of them for an end-to-end model (it decodes
    the media), those with features under its settings for a head."""
    if model_kind(read_metadata(production)) == "end_to_end":
        return pending
    # Chunks follow the feature parts (clip ids are hashes, so in id order every chunk would
    # touch every part): each part is read about once, and scoring stays linear in the clips.
    part_of = {clip: part for part, held in store.clips_by_part().items() for clip in held}
    ready = sorted(
        (c for c in pending if c.clip_id in part_of), key=lambda c: (part_of[c.clip_id], c.clip_id)
    )
    summary.missing_features = len(pending) - len(ready)
    if summary.missing_features:
        log.warning(
            "score: %d clips have no features for %s's settings (%s); run `stpipe extract`",
            summary.missing_features,
            production.model_version,
            production.settings_hash,
        )
    return ready


class _Scorer:
    """Scores chunks of clips with one loaded version and writes their rows."""

    def __init__(
        self,
        version: LoadedVersion,
        store: FeatureStore,
        run_id: str,
        logical_date: datetime | None,
    ) -> None:
        self.version, self.store = version, store
        self.stamp = {
            "model_version": version.record.model_version,
            "scored_at": utc_now(),
            "run_id": run_id,
            "logical_date": logical_date,
        }

    def predict(self, chunk: list[ClipRecord]) -> SegmentProbabilities:
        from pipeline.model.inference import predict_segments

        v = self.version
        return predict_segments(v.model, v.kind, chunk, v.streams, store=self.store, spec=v.spec)

    def score_chunk(
        self,
        chunk: list[ClipRecord],
        warehouse: Warehouse,
        summary: ScoreSummary,
        quarantine: Callable[[str, str], None] | None,
    ) -> None:
        """Predict ``chunk`` and write its rows in one go; segment rows first, so a clip row
        exists only once its segments do."""
        by_clip, failed = _predict_isolated(self.predict, chunk, quarantine)
        summary.quarantined += len(failed)
        summary.unscorable += sum(
            1 for c in chunk if c.clip_id not in by_clip and c.clip_id not in failed
        )
        segment_rows = [self._segment_row(seg, probs) for r in by_clip.values() for seg, probs in r]
        clip_rows = [self._clip_row(clip_id, rows) for clip_id, rows in by_clip.items() if rows]
        warehouse.upsert_segment_predictions(segment_rows)
        summary.scored += warehouse.upsert_predictions(clip_rows)
        summary.segments += len(segment_rows)

    def _segment_row(self, seg: SegmentFeatures, probs: npt.NDArray[np.float32]) -> dict[str, Any]:
        return {
            **self.stamp,
            **_labelled(self.version.record.class_names, probs),
            "clip_id": seg.clip_id,
            "segment_index": seg.segment_index,
            "n_segments": seg.n_segments,
            "start_seconds": seg.start_seconds,
            "end_seconds": seg.end_seconds,
        }

    def _clip_row(
        self, clip_id: str, rows: list[tuple[SegmentFeatures, npt.NDArray[np.float32]]]
    ) -> dict[str, Any]:
        from pipeline.model.inference import average_segments

        mean = average_segments([probs for _, probs in rows])
        return {
            **self.stamp,
            **_labelled(self.version.record.class_names, mean),
            "clip_id": clip_id,
            "n_segments": len(rows),
        }


def _log_summary(summary: ScoreSummary, production: ModelRecord) -> None:
    if summary.unscorable:
        log.warning(
            "score: %d clips have no %s features for %s",
            summary.unscorable,
            "/".join(production.streams or ["video", "audio"]),
            production.model_version,
        )
    log.info(
        "score: %d clips (%d segments) scored by %s (%d already scored, %d without features)",
        summary.scored,
        summary.segments,
        summary.model_version,
        summary.already_scored,
        summary.missing_features,
    )


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
