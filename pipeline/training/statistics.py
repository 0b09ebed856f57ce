"""Standardisation statistics: per-dimension mean and variance of the training frames' CNN
features, stored in the model's ``Normalization`` layers.

The head takes them over every cached training frame (:func:`feature_statistics`); the
end-to-end model, which reads the media and needs no feature cache, over a bounded, seeded
sample of training frames run through its own frozen VGG-16 (:func:`sampled_frame_statistics`).
Both accumulate float64 sums and sums of squares, so memory stays flat however many frames.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from pipeline.errors import DataValidationError, MediaError
from pipeline.features.identity import FEATURE_DIM
from pipeline.features.store import FeatureStore
from pipeline.model.inputs import iter_clip_segments
from pipeline.warehouse.database import ClipRecord

if TYPE_CHECKING:
    from pipeline.features.cnn import FrameEmbedder
    from pipeline.media.sequences import SequenceSpec

log = logging.getLogger(__name__)

#: Per stream, ``(mean, variance)``, each float32 ``(512,)``.
StreamStatistics = dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]

#: Most training clips the end-to-end statistics pass decodes: bounds its decoding work.
STATISTICS_MAX_CLIPS = 64
#: Most images per stream the pass runs through VGG-16: bounds its CNN work (about 2.5 min of
#: float32 VGG-16 at 224 px on two cores). A thousand frames pin 512 means and variances far
#: closer than standardisation needs.
STATISTICS_MAX_IMAGES = 1024
#: Images per VGG-16 forward batch of the pass.
STATISTICS_BATCH_SIZE = 32


def feature_statistics(
    store: FeatureStore, clip_ids: Sequence[str], stream: str
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Per-dimension mean and variance ``(512,)`` over all ``stream`` frames of ``clip_ids``."""
    moments = _Moments()
    for frames in store.iter_stream_frames(clip_ids, stream):
        moments.add(frames)
    if moments.count == 0:
        raise DataValidationError(f"no {stream} frames among the training clips")
    return moments.mean_variance()


@dataclass(frozen=True)
class SampledStatistics:
    """Statistics of a sample of training frames, and what the sample held."""

    by_stream: StreamStatistics
    images: dict[str, int]  # per stream, images that went through the CNN
    clips: int  # clips decoded


def sampled_frame_statistics(
    clips: Sequence[ClipRecord],
    streams: Sequence[str],
    spec: SequenceSpec,
    embedder: FrameEmbedder,
    *,
    seed: int,
    max_clips: int = STATISTICS_MAX_CLIPS,
    max_images: int = STATISTICS_MAX_IMAGES,
) -> SampledStatistics:
    """Per stream, mean and variance ``(512,)`` of the features ``embedder`` gives a sample of
    the frames decoded from ``clips`` (no feature store read).

    The sample is deterministic: clips in clip-id order, permuted by ``seed``; at most
    ``max_clips`` of them are decoded, each giving its first segments' images up to a share of
    ``max_images`` per stream (so the sample spreads over clips), and at most ``max_images``
    images per stream in all. Memory holds one segment and one CNN batch per stream. A clip that
    fails to decode is skipped with a warning. A stream the sample holds no image of (e.g. the
    planned audio of videos without a sound track) gets mean 0 and variance 1, with a warning.

    Args:
        clips: the training clips.
        streams: the streams the model reads.
        spec: how clips become images (the model's).
        embedder: the model's frozen VGG-16 (same weights, image size and precision).
        seed: seed of the clip order.
        max_clips, max_images: the bounds above (>= 1).
    """
    if max_clips < 1 or max_images < 1:
        raise ValueError("max_clips and max_images must be >= 1")
    order = _sample_order(clips, streams, spec, seed)[:max_clips]
    per_clip = math.ceil(max_images / max(1, len(order)))
    sums = {s: _BatchedMoments(embedder) for s in streams}
    decoded = 0
    for clip in order:
        if all(sums[s].taken >= max_images for s in streams):
            break
        decoded += 1
        try:
            _sample_clip(clip, streams, spec, sums, min(per_clip, max_images), max_images)
        except MediaError as exc:
            log.warning("statistics: skipping clip %s (%s): %s", clip.clip_id[:12], clip.uri, exc)
    by_stream = {stream: _mean_variance(stream, m, decoded) for stream, m in sums.items()}
    images = {s: sums[s].count for s in streams}
    log.info("statistics: %s images from %d sampled training clips", images, decoded)
    return SampledStatistics(by_stream, images, decoded)


def _sample_order(
    clips: Sequence[ClipRecord], streams: Sequence[str], spec: SequenceSpec, seed: int
) -> list[ClipRecord]:
    """The clips that have one of ``streams``, in clip-id order permuted by ``seed``."""
    candidates = sorted(
        (c for c in clips if set(streams) & set(spec.streams_for(c.modality or ""))),
        key=lambda c: c.clip_id,
    )
    return [candidates[i] for i in np.random.default_rng(seed).permutation(len(candidates))]


def _mean_variance(
    stream: str, moments: _BatchedMoments, decoded: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The stream's statistics; mean 0 and variance 1 (no standardisation) without an image."""
    moments.flush()
    if moments.count:
        return moments.mean_variance()
    log.warning(
        "statistics: no %s image in %d sampled clips; %s features are not standardised",
        stream,
        decoded,
        stream,
    )
    return np.zeros(FEATURE_DIM, np.float32), np.ones(FEATURE_DIM, np.float32)


def _sample_clip(
    clip: ClipRecord,
    streams: Sequence[str],
    spec: SequenceSpec,
    sums: dict[str, _BatchedMoments],
    share: int,
    max_images: int,
) -> None:
    """Add the clip's first ``share`` images of each stream (fewer once a stream is full)."""
    from_clip = dict.fromkeys(streams, 0)
    for _, images in iter_clip_segments(clip, spec, streams):
        for stream in streams:
            room = min(share - from_clip[stream], max_images - sums[stream].taken)
            taken = images[stream][: max(0, room)]
            from_clip[stream] += taken.shape[0]
            sums[stream].add_images(taken)
        if all(from_clip[s] >= share or sums[s].taken >= max_images for s in streams):
            return  # the rest of the clip is not decoded


@dataclass
class _Moments:
    """Running count, sum and sum of squares of ``(n, 512)`` feature rows, in float64."""

    count: int = 0
    total: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(FEATURE_DIM))
    total_sq: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(FEATURE_DIM))

    def add(self, frames: npt.NDArray[np.float32]) -> None:
        self.count += frames.shape[0]
        self.total += frames.sum(axis=0, dtype=np.float64)
        self.total_sq += np.square(frames, dtype=np.float64).sum(axis=0)

    def mean_variance(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        mean = self.total / self.count
        variance = np.maximum(self.total_sq / self.count - mean**2, 0.0)
        return mean.astype(np.float32), variance.astype(np.float32)


class _BatchedMoments(_Moments):
    """Moments of the features of images given a few at a time: images wait until a full CNN
    batch is there (no padded batches but the last), so at most one batch is held."""

    def __init__(self, embedder: FrameEmbedder) -> None:
        super().__init__()
        self.embedder = embedder
        self.waiting: list[npt.NDArray[np.uint8]] = []
        self.taken = 0  # images added, embedded or waiting

    def add_images(self, images: npt.NDArray[np.uint8]) -> None:
        """uint8 ``(n, S, S, 3)`` images; embeds whole batches once enough wait."""
        if not images.shape[0]:
            return
        self.waiting.append(images)
        self.taken += images.shape[0]
        batch = self.embedder.batch_size
        waiting = sum(w.shape[0] for w in self.waiting)
        if waiting >= batch:
            joined = np.concatenate(self.waiting)
            full = (waiting // batch) * batch
            self.add(self.embedder.embed_frames(joined[:full]))
            self.waiting = [joined[full:]] if full < waiting else []

    def flush(self) -> None:
        """Embed the images still waiting (one padded batch)."""
        if self.waiting:
            self.add(self.embedder.embed_frames(np.concatenate(self.waiting)))
            self.waiting = []
