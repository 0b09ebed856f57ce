"""Which clips an extraction run works on, and what it computes for each; no threads, no CNN.

* :func:`shard_of` splits the clips between parallel extraction tasks, stably by clip id;
* :func:`pending_clips` leaves out clips whose features are already in the store;
* :func:`split_claimed` sorts the pending clips by who holds their claims (see
  :mod:`pipeline.warehouse.claims`): this run, a run that has meanwhile committed them, or a
  run still at work on them;
* :func:`plan_clips` decides per clip which streams to copy from other feature stores (made
  with the same stream settings) and which the CNN must compute.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from pipeline.features.store import FeatureStore, SegmentFeatures
from pipeline.media.sequences import SequenceSpec
from pipeline.warehouse.database import ClipRecord


def shard_of(clip_id: str, shards: int) -> int:
    """Which of ``shards`` extraction shards a clip belongs to (stable, from its id)."""
    return int(clip_id[8:16], 16) % shards


def pending_clips(clips: Sequence[ClipRecord], stored: Collection[str]) -> list[ClipRecord]:
    """The clips, in order, whose ids are not among ``stored`` (the store's clip ids)."""
    return [c for c in clips if c.clip_id not in stored]


@dataclass(frozen=True)
class ClaimRound:
    """One round of claiming the clips still waiting for features."""

    todo: tuple[ClipRecord, ...]  # claimed by this run and not in the store: extract them now
    by_other_runs: int  # claimed by this run, but another run committed them meanwhile
    still_waiting: tuple[ClipRecord, ...]  # held by another run: look again later


def split_claimed(
    waiting: Sequence[ClipRecord], claimed: Collection[str], stored: Collection[str]
) -> ClaimRound:
    """Sort ``waiting`` by the clip ids this run ``claimed`` and those already ``stored``.

    ``stored`` must be read after claiming: a run that just finished may have released its
    claims, and its clips are then both claimable and stored.
    """
    return ClaimRound(
        todo=tuple(c for c in waiting if c.clip_id in claimed and c.clip_id not in stored),
        by_other_runs=sum(c.clip_id in claimed and c.clip_id in stored for c in waiting),
        still_waiting=tuple(c for c in waiting if c.clip_id not in claimed),
    )


@dataclass(frozen=True)
class ClipPlan:
    """What to do for one clip: the streams the CNN computes, in the order of
    ``SequenceSpec.streams_for``, and per copied stream its segment rows from another store."""

    clip: ClipRecord
    compute: tuple[str, ...]
    reused: dict[str, list[SegmentFeatures]]


def plan_clips(
    pending: Sequence[ClipRecord],
    spec: SequenceSpec,
    reuse_from: dict[str, list[FeatureStore]],
) -> list[ClipPlan]:
    """Decide per clip which streams to copy and which to compute.

    Args:
        pending: clips to extract.
        spec: how clips become image sequences (which streams a modality has).
        reuse_from: per stream, feature stores whose features for that stream were made with
            the current settings; the first store that has a clip's stream is used.
    """
    reusable = _reusable_rows(pending, reuse_from)
    plans = []
    for clip in pending:
        streams = spec.streams_for(clip.modality or "")
        found = reusable.get(clip.clip_id, {})
        reused = {s: found[s] for s in streams if s in found}
        plans.append(ClipPlan(clip, tuple(s for s in streams if s not in reused), reused))
    return plans


def _reusable_rows(
    pending: Sequence[ClipRecord], reuse_from: dict[str, list[FeatureStore]]
) -> dict[str, dict[str, list[SegmentFeatures]]]:
    """Per clip id and stream, the segment rows the first store holding them has."""
    ids = {c.clip_id for c in pending}
    reusable: dict[str, dict[str, list[SegmentFeatures]]] = {}
    for stream, sources in reuse_from.items():
        for source in sources:
            have = source.clip_ids() & ids
            missing = {c for c in have if stream not in reusable.get(c, {})}
            if not missing:
                continue
            for clip_id, rows in source.read_segments(missing, streams=(stream,)).items():
                reusable.setdefault(clip_id, {})[stream] = rows
    return reusable
