"""Stage 2, extract: decode clips into image sequences and cache their VGG-16 features.

Clips that already have features for the current settings hash are skipped without decoding
anything or importing TensorFlow. Decoding runs in worker threads (PyAV and librosa release the
GIL) while the main thread runs the CNN over batches that mix frames of many clips. A clip that
fails to decode is quarantined with the reason and the batch goes on.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import MediaError
from pipeline.feature_store import ClipFeatures, FeatureStore
from pipeline.progress import NullProgress, Progress
from pipeline.sequences import SequenceSpec, clip_images
from pipeline.warehouse import ClipRecord

if TYPE_CHECKING:
    from pipeline.cnn import FrameEmbedder

log = logging.getLogger(__name__)


@dataclass
class ExtractSummary:
    settings_hash: str
    clips: int = 0  # ok clips considered
    cached: int = 0  # already had features: skipped
    extracted: int = 0
    quarantined: int = 0
    frames: int = 0
    setup_seconds: float = 0.0  # importing TensorFlow and building VGG-16
    seconds: float = 0.0  # decoding + CNN + writing, after set-up
    frames_per_second: float = 0.0
    parts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def extract_features(
    clips: Sequence[ClipRecord],
    store: FeatureStore,
    spec: SequenceSpec,
    make_embedder: Callable[[], FrameEmbedder],
    *,
    quarantine: Callable[[str, str], None],
    decode_workers: int = 2,
    part_frames: int = 1024,
    progress: Progress | None = None,
) -> ExtractSummary:
    """Extract and store features for every clip in ``clips`` not yet in ``store``.

    Args:
        clips: ``ok`` clips from the warehouse.
        store: feature store of the current settings hash.
        spec: how clips become image sequences.
        make_embedder: builds the VGG-16 embedder; called only if there is work.
        quarantine: called with (clip_id, reason) for a clip that fails to decode.
        decode_workers: decoding threads.
        part_frames: frames buffered before they are embedded and written as one store part.
    """
    progress = progress or NullProgress()
    summary = ExtractSummary(settings_hash=store.settings_hash, clips=len(clips))
    done = store.clip_ids()
    pending = [c for c in clips if c.clip_id not in done]
    summary.cached = len(clips) - len(pending)
    if not pending:
        log.info(
            "extract: all %d clips already have features (%s)", len(clips), store.settings_hash
        )
        return summary

    setup_started = time.perf_counter()
    embedder = make_embedder()
    summary.setup_seconds = round(time.perf_counter() - setup_started, 3)
    started = time.perf_counter()
    progress.start("extract", len(pending), "clips")
    buffer: list[tuple[ClipRecord, npt.NDArray[np.uint8]]] = []
    buffered_frames = 0
    for clip, images_or_error in _decode_ahead(pending, spec, decode_workers):
        if isinstance(images_or_error, str):
            quarantine(clip.clip_id, images_or_error)
            summary.quarantined += 1
            progress.advance(1)
            log.warning(
                "quarantined clip %s (%s): %s", clip.clip_id[:12], clip.uri, images_or_error
            )
            continue
        buffer.append((clip, images_or_error))
        buffered_frames += images_or_error.shape[0]
        if buffered_frames >= part_frames:
            _flush(buffer, embedder, store, summary, progress)
            buffer, buffered_frames = [], 0
    if buffer:
        _flush(buffer, embedder, store, summary, progress)
    progress.finish()
    summary.seconds = round(time.perf_counter() - started, 3)
    summary.frames_per_second = (
        round(summary.frames / summary.seconds, 2) if summary.seconds else 0.0
    )
    log.info(
        "extract: %d clips, %d frames in %.1f s (%.1f frames/s; set-up %.1f s), %d cached, "
        "%d quarantined",
        summary.extracted,
        summary.frames,
        summary.seconds,
        summary.frames_per_second,
        summary.setup_seconds,
        summary.cached,
        summary.quarantined,
    )
    return summary


def _decode_one(clip: ClipRecord, spec: SequenceSpec) -> npt.NDArray[np.uint8] | str:
    if not clip.media_uri or not clip.modality:
        return "clip has no stored media file or modality; re-ingest it"
    try:
        return clip_images(clip.media_uri, clip.modality, spec, clip.duration_seconds)
    except MediaError as exc:
        return str(exc)


def _decode_ahead(
    clips: Sequence[ClipRecord], spec: SequenceSpec, workers: int
) -> Iterator[tuple[ClipRecord, npt.NDArray[np.uint8] | str]]:
    """Decoded clips in order, with at most ``2 * workers`` decodes in flight (bounded memory)."""
    window = max(1, 2 * workers)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode") as pool:
        in_flight: deque[tuple[ClipRecord, Future[npt.NDArray[np.uint8] | str]]] = deque()
        for clip in clips:
            in_flight.append((clip, pool.submit(_decode_one, clip, spec)))
            if len(in_flight) >= window:
                head, future = in_flight.popleft()
                yield head, future.result()
        while in_flight:
            head, future = in_flight.popleft()
            yield head, future.result()


def _flush(
    buffer: list[tuple[ClipRecord, npt.NDArray[np.uint8]]],
    embedder: FrameEmbedder,
    store: FeatureStore,
    summary: ExtractSummary,
    progress: Progress,
) -> None:
    frames = np.concatenate([images for _, images in buffer])
    features = embedder.embed_frames(frames)
    records = []
    offset = 0
    for clip, images in buffer:
        n = images.shape[0]
        records.append(
            ClipFeatures(clip.clip_id, clip.modality or "", features[offset : offset + n])
        )
        offset += n
    summary.parts.append(store.write_part(records))
    summary.extracted += len(records)
    summary.frames += int(frames.shape[0])
    progress.advance(len(records), int(frames.shape[0]))
