"""Stage 2, extract: decode clips into image sequences and cache their VGG-16 features.

Work is never repeated:

* a clip whose features are in the store for the current settings hash is skipped, without
  decoding anything or importing TensorFlow;
* a stream (video frames / audio windows) whose features exist in another feature folder with
  the same stream settings hash is copied from there, not recomputed;
* a clip another run is extracting at the same moment (it holds the clip's claim, see
  :mod:`pipeline.warehouse.claims`) is left to it: this run waits until the clip is committed,
  or takes the claim over if that run dies, so both end with every clip's features cached
  exactly once.

What is left goes through :class:`pipeline.extract.engine.ExtractionEngine`; which clips and
streams that is, is decided in :mod:`pipeline.extract.plan`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pipeline.extract.engine import ExtractionEngine
from pipeline.extract.plan import pending_clips, plan_clips, split_claimed
from pipeline.extract.summary import ExtractSummary
from pipeline.features.store import FeatureStore
from pipeline.media.limits import MediaLimits
from pipeline.media.sequences import SequenceSpec
from pipeline.progress import Progress
from pipeline.warehouse.claims import ClaimAll, Claims
from pipeline.warehouse.database import ClipRecord

if TYPE_CHECKING:
    from pipeline.features.cnn import FrameEmbedder

log = logging.getLogger(__name__)


def extract_features(
    clips: Sequence[ClipRecord],
    store: FeatureStore,
    spec: SequenceSpec,
    make_embedder: Callable[[], FrameEmbedder],
    *,
    quarantine: Callable[[str, str], None],
    claims: Claims | None = None,
    limits: MediaLimits | None = None,
    reuse_from: dict[str, list[FeatureStore]] | None = None,
    decode_workers: int = 2,
    part_frames: int = 1024,
    progress: Progress | None = None,
    shard: str = "1/1",
    poll_seconds: float = 2.0,
) -> ExtractSummary:
    """Extract and store features for every clip in ``clips`` not yet in ``store``.

    Args:
        clips: ``ok`` clips from the warehouse.
        store: feature store of the current settings hash.
        spec: how clips become image sequences.
        make_embedder: builds the VGG-16 embedder; called only if some stream must be computed.
        quarantine: called with (clip_id, reason) for a clip that fails.
        claims: coordination with runs at the same time (default: none).
        limits: per-file cost limits (default ones if None).
        reuse_from: per stream, feature stores whose features for that stream were made with
            the current settings (copied instead of recomputed).
        decode_workers: decoding threads.
        part_frames: frames (of finished clips) written together as one store part.
        shard: label of this shard for the summary, e.g. ``"2/4"``.
        poll_seconds: how often to look whether clips claimed by another run are done.
    """
    summary = ExtractSummary(settings_hash=store.settings_hash, shard=shard, clips=len(clips))
    waiting = pending_clips(clips, store.clip_ids())
    summary.cached = len(clips) - len(waiting)
    if not waiting:
        log.info(
            "extract %s: all %d clips already have features (%s)",
            shard,
            len(clips),
            store.settings_hash,
        )
        return summary
    started = time.perf_counter()
    engine = ExtractionEngine(
        store,
        spec,
        _EmbedderOnFirstUse(make_embedder, summary),
        quarantine,
        summary,
        limits=limits or MediaLimits(),
        decode_workers=decode_workers,
        part_frames=part_frames,
        progress=progress,
        shard=shard,
    )

    def extract(todo: Sequence[ClipRecord]) -> None:
        plans = plan_clips(todo, spec, reuse_from or {})
        summary.reused_streams += sum(len(plan.reused) for plan in plans)
        engine.run(plans)

    _extract_as_claimed(waiting, store, claims or ClaimAll(), extract, summary, poll_seconds)
    summary.seconds = round(time.perf_counter() - started - summary.setup_seconds, 3)
    summary.frames_per_second = (
        round(summary.frames / summary.seconds, 2) if summary.seconds > 0 else 0.0
    )
    _log_summary(summary)
    return summary


def _extract_as_claimed(
    waiting: Sequence[ClipRecord],
    store: FeatureStore,
    claims: Claims,
    extract: Callable[[Sequence[ClipRecord]], None],
    summary: ExtractSummary,
    poll_seconds: float,
) -> None:
    """Extract the waiting clips this run can claim, every ``poll_seconds`` again, until each is
    extracted here or committed by the run that held its claim."""
    first = True
    while waiting:
        if not first:
            time.sleep(poll_seconds)
        mine = claims.claim([c.clip_id for c in waiting])
        claimed = split_claimed(waiting, mine, store.clip_ids())
        summary.by_other_runs += claimed.by_other_runs
        try:
            extract(claimed.todo)
        finally:
            claims.release(mine)
        waiting = claimed.still_waiting
        if waiting and first:
            log.info(
                "extract %s: %d clips are being extracted by another run; waiting for them",
                summary.shard,
                len(waiting),
            )
        first = False


class _EmbedderOnFirstUse:
    """Builds the embedder when first asked for it, and times that set-up into the summary
    (importing TensorFlow and building VGG-16 takes seconds a fully copied batch never needs)."""

    def __init__(self, make_embedder: Callable[[], FrameEmbedder], summary: ExtractSummary):
        self.make_embedder = make_embedder
        self.summary = summary
        self.embedder: FrameEmbedder | None = None

    def __call__(self) -> FrameEmbedder:
        if self.embedder is None:
            setup_started = time.perf_counter()
            self.embedder = self.make_embedder()
            self.summary.setup_seconds = round(time.perf_counter() - setup_started, 3)
        return self.embedder


def _log_summary(summary: ExtractSummary) -> None:
    log.info(
        "extract %s: %d clips (%d segments), %d CNN frames in %.1f s (%.1f frames/s; set-up "
        "%.1f s); %d cached, %d by other runs, %d streams reused, %d quarantined",
        summary.shard,
        summary.extracted,
        summary.segments,
        summary.frames,
        summary.seconds,
        summary.frames_per_second,
        summary.setup_seconds,
        summary.cached,
        summary.by_other_runs,
        summary.reused_streams,
        summary.quarantined,
    )
