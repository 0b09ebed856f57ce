"""The extraction engine: decode planned clips, run the CNN over their images, write the store.

Decoding runs in worker threads (PyAV and librosa release the GIL), segment by segment, into a
bounded queue of typed messages (:data:`DecodeMessage`); the main thread runs the CNN over
batches that mix frames of many clips, and writes a clip once every sequence of it is decoded
and embedded. Memory stays flat however long a clip is. Finished clips are written in parts of
about ``part_frames`` frames.

Each clip is decoded inside its own boundary: a clip that fails to decode, is over a cost limit,
yields non-finite features, or raises anything unexpected is quarantined with the reason, and
the rest go on. Only infrastructure failures (disk full, out of memory, the warehouse gone) and
bugs in a worker stop the run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias, assert_never

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from pipeline.errors import MediaError, describe, infrastructure_problem
from pipeline.extract.plan import ClipPlan
from pipeline.extract.summary import ExtractSummary
from pipeline.features.store import FeatureStore, SegmentFeatures, empty_features
from pipeline.media.limits import MediaLimits
from pipeline.media.sequences import SegmentImages, SequenceSpec, iter_clip_images
from pipeline.progress import NullProgress, Progress
from pipeline.warehouse.database import ClipRecord

if TYPE_CHECKING:
    from pipeline.features.cnn import FrameEmbedder

log = logging.getLogger(__name__)


@dataclass
class ClipWork:
    """A clip in flight: its plan and the features gathered so far."""

    plan: ClipPlan
    segments: dict[int, SegmentFeatures] = field(default_factory=dict)
    unembedded: int = 0  # decoded sequences waiting for the CNN
    decoded: bool = False
    failed: str | None = None

    @property
    def clip(self) -> ClipRecord:
        return self.plan.clip

    def add(self, item: SegmentImages, features: npt.NDArray[np.float32]) -> None:
        seg = item.segment
        self._row(seg.index, seg.count, seg.start, seg.end).streams[item.stream] = features

    def finish(self, streams: Sequence[str]) -> list[SegmentFeatures]:
        """All segments with every stream filled in (copied streams merged, gaps empty)."""
        for stream, rows in self.plan.reused.items():
            for reused in rows:
                row = self._row(
                    reused.segment_index,
                    reused.n_segments,
                    reused.start_seconds,
                    reused.end_seconds,
                )
                row.streams[stream] = reused.stream(stream)
        for row in self.segments.values():
            for stream in streams:
                row.streams.setdefault(stream, empty_features())
        return [self.segments[i] for i in sorted(self.segments)]

    def _row(self, index: int, count: int, start: float, end: float) -> SegmentFeatures:
        row = SegmentFeatures(self.clip.clip_id, index, count, start, end, self.clip.modality or "")
        return self.segments.setdefault(index, row)


# Messages from the decode workers to the main thread.


@dataclass(frozen=True)
class ImagesDecoded:
    """One stream of one segment of a clip, decoded into the images the CNN sees."""

    work: ClipWork
    images: SegmentImages


@dataclass(frozen=True)
class ClipDecoded:
    """Every sequence of the clip has been sent; none follows."""

    work: ClipWork


@dataclass(frozen=True)
class ClipFailed:
    """The clip could not be decoded; ``reason`` is the quarantine reason."""

    work: ClipWork
    reason: str


@dataclass(frozen=True)
class WorkerCrashed:
    """A worker failed outside any clip's boundary (a bug, or an infrastructure failure)."""

    error: BaseException


@dataclass(frozen=True)
class WorkerFinished:
    """A worker has stopped; it sends nothing more."""


DecodeMessage: TypeAlias = ImagesDecoded | ClipDecoded | ClipFailed | WorkerCrashed | WorkerFinished


class ExtractionEngine:
    """Extracts batches of planned clips: copied-only clips straight to the writer, the rest
    through the decode-and-embed pipeline; every batch ends with its parts committed.

    Args:
        store: feature store the clips are written to.
        spec: how clips become image sequences.
        embedder: returns the VGG-16 embedder; called only when a batch has streams to compute.
        quarantine: called with (clip_id, reason) for a clip that fails.
        summary: counts clips, segments, frames and parts into it.
        limits: per-file cost limits.
        decode_workers: decoding threads.
        part_frames: frames (of finished clips) written together as one store part.
        progress: progress of each batch, in clips and CNN frames.
        shard: label of this shard for progress, e.g. ``"2/4"``.
    """

    def __init__(
        self,
        store: FeatureStore,
        spec: SequenceSpec,
        embedder: Callable[[], FrameEmbedder],
        quarantine: Callable[[str, str], None],
        summary: ExtractSummary,
        *,
        limits: MediaLimits,
        decode_workers: int,
        part_frames: int,
        progress: Progress | None,
        shard: str,
    ) -> None:
        self.spec = spec
        self.embedder = embedder
        self.writer = _PartWriter(store, spec, part_frames, summary, quarantine)
        self.quarantine = quarantine
        self.summary = summary
        self.limits = limits
        self.decode_workers = decode_workers
        self.progress = progress or NullProgress()
        self.shard = shard

    def run(self, plans: Sequence[ClipPlan]) -> None:
        works = [ClipWork(plan) for plan in plans]
        try:
            for work in works:
                if not work.plan.compute:  # everything copied from other settings folders
                    self.writer.add(work)
            to_compute = [w for w in works if w.plan.compute]
            if to_compute:
                embedder = self.embedder()
                self.progress.start(f"extract {self.shard}", len(to_compute), "clips")
                self._decode_and_embed(to_compute, embedder)
                self.progress.finish()
            self.writer.flush()
        finally:
            self.writer.close()

    def _decode_and_embed(self, works: list[ClipWork], embedder: FrameEmbedder) -> None:
        """Decode in threads into a bounded queue; embed in mixed batches here; write finished
        clips. A worker's crash is re-raised here once every worker has stopped."""
        assembler = _ClipAssembler(
            embedder, self.writer, self.quarantine, self.progress, self.summary
        )
        workers = _DecodeWorkers(works, self.spec, self.limits, self.decode_workers)
        # NumPy's BLAS (librosa's mel filter bank) would start threads of its own in every
        # decoding thread, and they spin on the cores the CNN needs: one each is enough.
        with threadpool_limits(limits=1, user_api="blas"):
            workers.start()
            try:
                _handle_messages(workers.messages, len(workers.threads), assembler)
                assembler.finish()
            finally:
                workers.stop()
                self.summary.decode_cpu_seconds = round(
                    self.summary.decode_cpu_seconds + workers.cpu_seconds, 3
                )


def _handle_messages(
    messages: queue.Queue[DecodeMessage], workers: int, assembler: _ClipAssembler
) -> None:
    """Hand each message to ``assembler`` until all ``workers`` have finished."""
    running = workers
    while running:
        match messages.get():
            case WorkerFinished():
                running -= 1
            case WorkerCrashed(error=error):
                raise error
            case ImagesDecoded(work=work, images=images):
                assembler.add_images(work, images)
            case ClipDecoded(work=work):
                assembler.mark_decoded(work)
            case ClipFailed(work=work, reason=reason):
                assembler.fail(work, reason)
            case unexpected:
                assert_never(unexpected)


class _DecodeWorkers:
    """Threads that take clips one at a time and decode them into a bounded message queue.

    Each clip is decoded inside its own boundary: any exception but an infrastructure failure
    fails that clip only (:class:`ClipFailed`, with the exception's type and message). Anything
    else ends the worker with a :class:`WorkerCrashed`; every worker ends with a
    :class:`WorkerFinished`.
    """

    def __init__(
        self, works: Sequence[ClipWork], spec: SequenceSpec, limits: MediaLimits, count: int
    ) -> None:
        self.spec = spec
        self.limits = limits
        self.messages: queue.Queue[DecodeMessage] = queue.Queue(maxsize=4 * count)
        self._works = iter(works)
        self._works_lock = threading.Lock()
        self._stop = threading.Event()
        self.cpu_seconds = 0.0  # CPU time of the finished workers
        self.threads = [
            threading.Thread(target=self._decode_clips, name=f"decode-{i}", daemon=True)
            for i in range(max(1, count))
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        """Tell the workers to stop, unblock those waiting on a full queue, and join them."""
        self._stop.set()
        while any(t.is_alive() for t in self.threads):
            try:
                self.messages.get_nowait()
            except queue.Empty:
                time.sleep(0.01)
        for thread in self.threads:
            thread.join()

    def _next_work(self) -> ClipWork | None:
        with self._works_lock:
            return next(self._works, None)

    def _decode_clips(self) -> None:
        _yield_to_the_cnn()
        try:
            while not self._stop.is_set() and (work := self._next_work()) is not None:
                self._decode_clip(work)
        except BaseException as exc:  # a bug: hand it to the main thread, which re-raises
            self.messages.put(WorkerCrashed(exc))
        finally:
            with self._works_lock:
                self.cpu_seconds += time.thread_time()
            self.messages.put(WorkerFinished())

    def _decode_clip(self, work: ClipWork) -> None:
        try:
            for images in self._sequences(work):
                self.messages.put(ImagesDecoded(work, images))
                if self._stop.is_set():
                    return
            self.messages.put(ClipDecoded(work))
        except Exception as exc:
            if infrastructure_problem(exc):
                raise
            self.messages.put(ClipFailed(work, describe(exc)))

    def _sequences(self, work: ClipWork) -> Iterator[SegmentImages]:
        clip = work.clip
        if not clip.media_uri or not clip.modality:
            raise MediaError("clip has no stored media file or modality; re-ingest it")
        return iter_clip_images(
            clip.media_uri,
            clip.modality,
            self.spec,
            clip.duration_seconds,
            streams=work.plan.compute,
            limits=self.limits,
        )


#: How much less CPU priority the decoding threads get than the CNN (a nice increment).
DECODE_NICENESS = 10


def _yield_to_the_cnn() -> None:
    """Lower this (decoding) thread's CPU priority, so that it runs in the gaps the CNN leaves.

    The CNN keeps every core busy with its own threads; a decoding thread of equal priority
    preempts one of them, and the others then wait for it at the end of each layer, so decoding
    would cost the CNN more than its own CPU time. The queue of decoded images is bounded: when
    it runs dry the CNN waits and the decoders get the cores. Linux applies the niceness of a
    thread id to that thread only; elsewhere this does nothing.
    """
    with contextlib.suppress(AttributeError, OSError):  # no per-thread priorities here
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DECODE_NICENESS)


class _ClipAssembler:
    """The main thread's side: embeds decoded images in mixed batches, gathers each clip's
    features, writes a clip once it is decoded and fully embedded, quarantines failed clips."""

    def __init__(
        self,
        embedder: FrameEmbedder,
        writer: _PartWriter,
        quarantine: Callable[[str, str], None],
        progress: Progress,
        summary: ExtractSummary,
    ) -> None:
        self.batcher = _Batcher(embedder, self._embedded)
        self.writer = writer
        self.quarantine = quarantine
        self.progress = progress
        self.summary = summary
        self.in_flight: dict[str, ClipWork] = {}

    def add_images(self, work: ClipWork, images: SegmentImages) -> None:
        self.in_flight.setdefault(work.clip.clip_id, work)
        if images.images.shape[0] == 0:  # e.g. a video without an audio track
            work.add(images, empty_features())
            return
        work.unembedded += 1
        embedded_frames = self.batcher.add(work, images)
        if embedded_frames:
            self._count_frames(embedded_frames)
            self._write_finished_clips()

    def mark_decoded(self, work: ClipWork) -> None:
        self.in_flight.setdefault(work.clip.clip_id, work)
        work.decoded = True
        self._write_finished_clips()

    def fail(self, work: ClipWork, reason: str) -> None:
        work.failed = reason  # the batcher drops its frames still waiting
        self.in_flight.pop(work.clip.clip_id, None)
        self.quarantine(work.clip.clip_id, reason)
        self.summary.quarantined += 1
        self.progress.advance(1)
        log.warning("quarantined clip %s (%s): %s", work.clip.clip_id[:12], work.clip.uri, reason)

    def finish(self) -> None:
        """Embed the frames still waiting (a last, partial batch) and write the last clips."""
        self._count_frames(self.batcher.finish())
        self._write_finished_clips()

    def _count_frames(self, embedded_frames: int) -> None:
        self.summary.frames += embedded_frames
        self.progress.advance(0, embedded_frames)

    def _embedded(
        self, work: ClipWork, item: SegmentImages, features: npt.NDArray[np.float32]
    ) -> None:
        work.add(item, features)
        work.unembedded -= 1

    def _write_finished_clips(self) -> None:
        for clip_id, work in list(self.in_flight.items()):
            if work.decoded and work.unembedded == 0:
                self.writer.add(work)
                del self.in_flight[clip_id]
                self.progress.advance(1)


@dataclass
class _Pending:
    """A decoded sequence waiting for (part of) its frames to go through the CNN."""

    work: ClipWork
    item: SegmentImages
    features: npt.NDArray[np.float32]
    sent: int = 0  # frames handed to the CNN so far

    @property
    def size(self) -> int:
        return int(self.item.images.shape[0])


class _Batcher:
    """Feeds the CNN full batches only, mixing frames of many sequences and clips; a sequence
    may straddle two batches. Only :meth:`finish` runs a partial (padded) last batch."""

    def __init__(
        self,
        embedder: FrameEmbedder,
        on_embedded: Callable[[ClipWork, SegmentImages, npt.NDArray[np.float32]], None],
        batches_per_call: int = 4,
    ) -> None:
        self.embedder = embedder
        self.on_embedded = on_embedded
        self.call_frames = batches_per_call * embedder.batch_size
        self.pending: list[_Pending] = []
        self.waiting = 0  # frames not yet sent

    def add(self, work: ClipWork, item: SegmentImages) -> int:
        """Queue a sequence; embed whole batches once enough frames wait. Returns frames run."""
        n = int(item.images.shape[0])
        self.pending.append(
            _Pending(work, item, np.empty((n, self.embedder.encoder_output_dim), np.float32))
        )
        self.waiting += n
        return self._run(full_batches_only=True) if self.waiting >= self.call_frames else 0

    def finish(self) -> int:
        return self._run(full_batches_only=False)

    def _run(self, *, full_batches_only: bool) -> int:
        self.pending = [p for p in self.pending if p.work.failed is None]
        self.waiting = sum(p.size - p.sent for p in self.pending)
        batch = self.embedder.batch_size
        take = (self.waiting // batch) * batch if full_batches_only else self.waiting
        if take == 0:
            return 0
        slices = self._take_frames(take)
        features = self.embedder.embed_frames(
            np.concatenate([p.item.images[a:b] for p, a, b in slices])
        )
        offset = 0
        for pending, a, b in slices:
            pending.features[a:b] = features[offset : offset + b - a]
            offset += b - a
            if b == pending.size:
                self.on_embedded(pending.work, pending.item, pending.features)
        self.pending = [p for p in self.pending if p.sent < p.size]
        self.waiting -= take
        return take

    def _take_frames(self, take: int) -> list[tuple[_Pending, int, int]]:
        """Mark the next ``take`` waiting frames as sent: (sequence, first, end) slices."""
        slices: list[tuple[_Pending, int, int]] = []
        remaining = take
        for pending in self.pending:
            k = min(pending.size - pending.sent, remaining)
            if k:
                slices.append((pending, pending.sent, pending.sent + k))
                pending.sent += k
                remaining -= k
            if not remaining:
                break
        return slices


class _PartWriter:
    """Collects finished clips and writes them as parts of about ``part_frames`` frames.

    Parts are written by a thread of their own while the CNN goes on (one part at a time: a
    part waits for the one before, so memory holds at most two). A write that fails stops the
    run at the next part or at :meth:`flush`, with its own error.

    A clip whose features are not all finite is quarantined instead of written (one bad clip
    must not make its whole part unwritable)."""

    def __init__(
        self,
        store: FeatureStore,
        spec: SequenceSpec,
        part_frames: int,
        summary: ExtractSummary,
        quarantine: Callable[[str, str], None],
    ) -> None:
        self.store = store
        self.spec = spec
        self.part_frames = part_frames
        self.summary = summary
        self.quarantine = quarantine
        self.rows: list[SegmentFeatures] = []
        self.frames = 0
        self._executor: ThreadPoolExecutor | None = None
        self._writing: Future[str] | None = None

    def add(self, work: ClipWork) -> None:
        rows = work.finish(self.spec.streams_for(work.clip.modality or ""))
        if not all(np.isfinite(a).all() for row in rows for a in row.streams.values()):
            reason = "its VGG-16 features are not finite (NaN or inf)"
            log.warning(
                "quarantined clip %s (%s): %s", work.clip.clip_id[:12], work.clip.uri, reason
            )
            self.quarantine(work.clip.clip_id, reason)
            self.summary.quarantined += 1
            return
        self.rows.extend(rows)
        self.frames += sum(r.frames for r in rows)
        self.summary.extracted += 1
        self.summary.segments += len(rows)
        if self.frames >= self.part_frames:
            self._write_in_background()

    def flush(self) -> None:
        """Write what is collected, and wait until every part is written."""
        if self.rows:
            self._write_in_background()
        self._wait()

    def close(self) -> None:
        """After a failure elsewhere: let a part being written finish (a write never outlives
        the run that started it), and stop the writing thread."""
        if self._writing is not None:
            writing, self._writing = self._writing, None
            if writing.exception() is None:
                self.summary.parts.append(writing.result())
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _write_in_background(self) -> None:
        self._wait()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="write-part")
        self._writing = self._executor.submit(self.store.write_part, self.rows)
        self.rows, self.frames = [], 0

    def _wait(self) -> None:
        if self._writing is not None:
            writing, self._writing = self._writing, None
            self.summary.parts.append(writing.result())
