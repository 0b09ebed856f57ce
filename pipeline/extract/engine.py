"""Stage 2, extract: decode clips into image sequences and cache their VGG-16 features.

Work is never repeated:

* a clip whose features are in the store for the current settings hash is skipped, without
  decoding anything or importing TensorFlow;
* a stream (video frames / audio windows) whose features exist in another feature folder with
  the same stream settings hash is copied from there, not recomputed;
* a clip another run is extracting at the same moment (it holds the clip's claim, see
  :mod:`pipeline.claims`) is left to it: this run waits until the clip is committed, or takes
  the claim over if that run dies, so both end with every clip's features cached exactly once.

What is left is decoded by worker threads (PyAV and librosa release the GIL), segment by
segment, into a bounded queue, while the main thread runs the CNN over batches that mix frames of
many clips; memory stays flat however long a clip is. Finished clips are written in parts of about
``part_frames`` frames. Each clip is decoded inside its own boundary: a clip that fails to decode,
is over a cost limit, yields non-finite features, or raises anything unexpected is quarantined
with the reason, and the rest go on. Only infrastructure failures (disk full, out of memory, the
warehouse gone) stop the run.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import MediaError, describe, infrastructure_problem
from pipeline.features.store import FeatureStore, SegmentFeatures, empty_features
from pipeline.media.limits import MediaLimits
from pipeline.media.sequences import SegmentImages, SequenceSpec, iter_clip_images
from pipeline.progress import NullProgress, Progress
from pipeline.warehouse.claims import ClaimAll, Claims
from pipeline.warehouse.database import ClipRecord

if TYPE_CHECKING:
    from pipeline.features.cnn import FrameEmbedder

log = logging.getLogger(__name__)


@dataclass
class ExtractSummary:
    settings_hash: str
    shard: str = "1/1"
    clips: int = 0  # ok clips in this shard
    cached: int = 0  # already had features: skipped
    by_other_runs: int = 0  # extracted by another run at the same time
    extracted: int = 0  # clips written this run
    reused_streams: int = 0  # clip streams copied from another settings folder
    quarantined: int = 0
    segments: int = 0
    frames: int = 0  # frames that went through the CNN
    setup_seconds: float = 0.0  # importing TensorFlow and building VGG-16
    seconds: float = 0.0  # decoding + CNN + writing, after set-up
    frames_per_second: float = 0.0
    parts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def combine_summaries(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One run-level summary from the shards' summaries (their ``as_dict()`` values)."""
    total: dict[str, Any] = {"shards": len(summaries)}
    for key in (
        "clips",
        "cached",
        "by_other_runs",
        "extracted",
        "reused_streams",
        "quarantined",
        "segments",
        "frames",
    ):
        total[key] = sum(int(s.get(key, 0)) for s in summaries)
    busiest = max((float(s.get("seconds", 0.0)) for s in summaries), default=0.0)
    total["seconds"] = round(busiest, 3)  # shards run side by side: the slowest one
    total["frames_per_second"] = round(
        sum(float(s.get("frames_per_second", 0.0)) for s in summaries), 2
    )
    total["settings_hash"] = summaries[0]["settings_hash"] if summaries else None
    return total


def shard_of(clip_id: str, shards: int) -> int:
    """Which of ``shards`` extraction shards a clip belongs to (stable, from its id)."""
    return int(clip_id[8:16], 16) % shards


@dataclass
class _ClipWork:
    """A clip in flight: the streams to compute and the features gathered so far."""

    clip: ClipRecord
    compute: tuple[str, ...]
    reused: dict[str, list[SegmentFeatures]]
    segments: dict[int, SegmentFeatures] = field(default_factory=dict)
    unembedded: int = 0  # decoded sequences waiting for the CNN
    decoded: bool = False
    failed: str | None = None

    def add(self, item: SegmentImages, features: npt.NDArray[np.float32]) -> None:
        seg = item.segment
        row = self.segments.setdefault(
            seg.index,
            SegmentFeatures(
                self.clip.clip_id,
                seg.index,
                seg.count,
                seg.start,
                seg.end,
                self.clip.modality or "",
            ),
        )
        row.streams[item.stream] = features

    def finish(self, streams: Sequence[str]) -> list[SegmentFeatures]:
        """All segments with every stream filled in (copied streams merged, gaps empty)."""
        for stream, rows in self.reused.items():
            for reused in rows:
                row = self.segments.setdefault(
                    reused.segment_index,
                    SegmentFeatures(
                        self.clip.clip_id,
                        reused.segment_index,
                        reused.n_segments,
                        reused.start_seconds,
                        reused.end_seconds,
                        self.clip.modality or "",
                    ),
                )
                row.streams[stream] = reused.stream(stream)
        for row in self.segments.values():
            for stream in streams:
                row.streams.setdefault(stream, empty_features())
        return [self.segments[i] for i in sorted(self.segments)]


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
    claims = claims or ClaimAll()
    summary = ExtractSummary(settings_hash=store.settings_hash, shard=shard, clips=len(clips))
    done = store.clip_ids()
    waiting = [c for c in clips if c.clip_id not in done]
    summary.cached = len(clips) - len(waiting)
    if not waiting:
        log.info(
            "extract %s: all %d clips already have features (%s)",
            shard,
            len(clips),
            store.settings_hash,
        )
        return summary

    embedder: list[FrameEmbedder] = []

    def embedder_once() -> FrameEmbedder:
        if not embedder:
            setup_started = time.perf_counter()
            embedder.append(make_embedder())
            summary.setup_seconds = round(time.perf_counter() - setup_started, 3)
        return embedder[0]

    started = time.perf_counter()
    writer = _PartWriter(store, spec, part_frames, summary, quarantine)
    engine = _Engine(
        spec, embedder_once, writer, quarantine, limits or MediaLimits(), decode_workers, progress
    )
    first = True
    while waiting:
        if not first:
            time.sleep(poll_seconds)
        mine = claims.claim([c.clip_id for c in waiting])
        done = store.clip_ids()  # again: a run that just finished may have released its claims
        todo = [c for c in waiting if c.clip_id in mine and c.clip_id not in done]
        summary.by_other_runs += sum(c.clip_id in mine and c.clip_id in done for c in waiting)
        try:
            engine.run(_plan(todo, spec, reuse_from or {}, summary), shard)
        finally:
            claims.release(mine)
        waiting = [c for c in waiting if c.clip_id not in mine]
        if waiting and first:
            log.info(
                "extract %s: %d clips are being extracted by another run; waiting for them",
                shard,
                len(waiting),
            )
        first = False
    summary.seconds = round(time.perf_counter() - started - summary.setup_seconds, 3)
    summary.frames_per_second = (
        round(summary.frames / summary.seconds, 2) if summary.seconds > 0 else 0.0
    )
    log.info(
        "extract %s: %d clips (%d segments), %d CNN frames in %.1f s (%.1f frames/s; set-up "
        "%.1f s); %d cached, %d by other runs, %d streams reused, %d quarantined",
        shard,
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
    return summary


def _plan(
    pending: Sequence[ClipRecord],
    spec: SequenceSpec,
    reuse_from: dict[str, list[FeatureStore]],
    summary: ExtractSummary,
) -> list[_ClipWork]:
    """Decide per clip which streams to copy and which to compute."""
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
    works = []
    for clip in pending:
        streams = spec.streams_for(clip.modality or "")
        reused = {
            s: reusable[clip.clip_id][s] for s in streams if s in reusable.get(clip.clip_id, {})
        }
        summary.reused_streams += len(reused)
        works.append(_ClipWork(clip, tuple(s for s in streams if s not in reused), reused))
    return works


class _PartWriter:
    """Collects finished clips and writes them as parts of about ``part_frames`` frames.

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

    def add(self, work: _ClipWork) -> None:
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
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.summary.parts.append(self.store.write_part(self.rows))
            self.rows, self.frames = [], 0


class _Engine:
    """Extracts batches of planned clips: copied-only clips straight to the writer, the rest
    through the decode-and-embed pipeline; every batch ends with its parts committed."""

    def __init__(
        self,
        spec: SequenceSpec,
        embedder: Callable[[], FrameEmbedder],
        writer: _PartWriter,
        quarantine: Callable[[str, str], None],
        limits: MediaLimits,
        decode_workers: int,
        progress: Progress | None,
    ) -> None:
        self.spec = spec
        self.embedder = embedder
        self.writer = writer
        self.quarantine = quarantine
        self.limits = limits
        self.decode_workers = decode_workers
        self.progress = progress or NullProgress()

    def run(self, works: list[_ClipWork], shard: str) -> None:
        for work in works:
            if not work.compute:  # everything copied from other settings folders
                self.writer.add(work)
        to_compute = [w for w in works if w.compute]
        if to_compute:
            embedder = self.embedder()
            self.progress.start(f"extract {shard}", len(to_compute), "clips")
            _run_pipeline(
                to_compute,
                self.spec,
                embedder,
                self.writer,
                self.quarantine,
                self.limits,
                self.decode_workers,
                self.progress,
                self.writer.summary,
            )
            self.progress.finish()
        self.writer.flush()


@dataclass
class _Pending:
    """A decoded sequence waiting for (part of) its frames to go through the CNN."""

    work: _ClipWork
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
        on_embedded: Callable[[_ClipWork, SegmentImages, npt.NDArray[np.float32]], None],
        batches_per_call: int = 4,
    ) -> None:
        self.embedder = embedder
        self.on_embedded = on_embedded
        self.call_frames = batches_per_call * embedder.batch_size
        self.pending: list[_Pending] = []
        self.waiting = 0  # frames not yet sent

    def add(self, work: _ClipWork, item: SegmentImages) -> int:
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


def _run_pipeline(
    works: list[_ClipWork],
    spec: SequenceSpec,
    embedder: FrameEmbedder,
    writer: _PartWriter,
    quarantine: Callable[[str, str], None],
    limits: MediaLimits,
    decode_workers: int,
    progress: Progress,
    summary: ExtractSummary,
) -> None:
    """Decode in threads into a bounded queue; embed in mixed batches here; write finished clips.

    Each clip is decoded inside its own boundary: any exception but an infrastructure failure
    fails that clip only (it is quarantined with the exception's type and message)."""
    items: queue.Queue[tuple[str, _ClipWork | None, Any]] = queue.Queue(maxsize=4 * decode_workers)
    jobs = iter(works)
    jobs_lock = threading.Lock()
    stop = threading.Event()

    def next_job() -> _ClipWork | None:
        with jobs_lock:
            return next(jobs, None)

    def decode_worker() -> None:
        try:
            while not stop.is_set() and (work := next_job()) is not None:
                try:
                    if not work.clip.media_uri or not work.clip.modality:
                        raise MediaError("clip has no stored media file or modality; re-ingest it")
                    for item in iter_clip_images(
                        work.clip.media_uri,
                        work.clip.modality,
                        spec,
                        work.clip.duration_seconds,
                        streams=work.compute,
                        limits=limits,
                    ):
                        items.put(("item", work, item))
                        if stop.is_set():
                            return
                    items.put(("decoded", work, None))
                except Exception as exc:
                    if infrastructure_problem(exc):
                        raise
                    items.put(("failed", work, describe(exc)))
        except BaseException as exc:  # a bug: hand it to the main thread, which re-raises
            items.put(("crashed", None, exc))
        finally:
            items.put(("exit", None, None))

    threads = [
        threading.Thread(target=decode_worker, name=f"decode-{i}", daemon=True)
        for i in range(max(1, decode_workers))
    ]
    for thread in threads:
        thread.start()

    def embedded(work: _ClipWork, item: SegmentImages, features: npt.NDArray[np.float32]) -> None:
        work.add(item, features)
        work.unembedded -= 1

    batcher = _Batcher(embedder, embedded)
    running = len(threads)

    in_flight: dict[str, _ClipWork] = {}

    def finish_ready() -> None:
        for clip_id, work in list(in_flight.items()):
            if work.decoded and work.unembedded == 0:
                writer.add(work)
                del in_flight[clip_id]
                progress.advance(1)

    try:
        while running:
            kind, work, payload = items.get()
            if kind == "exit":
                running -= 1
            elif kind == "crashed":
                raise payload
            elif work is not None and kind == "item":
                in_flight.setdefault(work.clip.clip_id, work)
                if payload.images.shape[0] == 0:  # e.g. a video without an audio track
                    work.add(payload, empty_features())
                else:
                    work.unembedded += 1
                    embedded_frames = batcher.add(work, payload)
                    if embedded_frames:
                        summary.frames += embedded_frames
                        progress.advance(0, embedded_frames)
                        finish_ready()
            elif work is not None and kind == "decoded":
                in_flight.setdefault(work.clip.clip_id, work)
                work.decoded = True
                finish_ready()
            elif work is not None and kind == "failed":
                work.failed = payload
                in_flight.pop(work.clip.clip_id, None)
                quarantine(work.clip.clip_id, payload)
                summary.quarantined += 1
                progress.advance(1)
                log.warning(
                    "quarantined clip %s (%s): %s", work.clip.clip_id[:12], work.clip.uri, payload
                )
        embedded_frames = batcher.finish()
        summary.frames += embedded_frames
        progress.advance(0, embedded_frames)
        finish_ready()
    finally:
        stop.set()
        while any(t.is_alive() for t in threads):  # unblock workers waiting on a full queue
            try:
                items.get_nowait()
            except queue.Empty:
                time.sleep(0.01)
        for thread in threads:
            thread.join()
