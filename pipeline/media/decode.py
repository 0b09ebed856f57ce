"""Streaming decode of media files with PyAV (FFmpeg bundled in its wheels).

Nothing here holds a whole video in memory: frames are decoded one at a time and only the
sampled ones are kept (already resized to the CNN input size by FFmpeg's scaler). Audio decoding
stops once it has the samples the caller asked for. Probing (what a file claims, checked against
the limits) is in :mod:`pipeline.media.probe`.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from pipeline.errors import LimitError, MediaError
from pipeline.media.container import describe_av_error, main_video_stream, open_container
from pipeline.media.limits import MediaLimits
from pipeline.media.probe import demuxed_duration


@dataclass(frozen=True)
class Segment:
    """A stretch ``[start, end)`` of a clip, in seconds, that becomes one sequence."""

    index: int
    count: int
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def plan_segments(duration_seconds: float, segment_seconds: float) -> list[Segment]:
    """Cut ``[0, duration)`` into equal segments of about ``segment_seconds``.

    The count is the duration divided by the segment length, rounded half up (at least one), so
    a 25 s clip with 10 s segments gives three of 8.33 s, a 14 s clip one of 14 s.
    """
    if segment_seconds <= 0:
        raise ValueError("segment_seconds must be positive")
    duration = max(float(duration_seconds), 0.0)
    count = max(1, math.floor(duration / segment_seconds + 0.5))
    length = duration / count
    return [Segment(i, count, i * length, (i + 1) * length) for i in range(count)]


def sample_times(duration_seconds: float, n_frames: int) -> npt.NDArray[np.float64]:
    """Centres of ``n_frames`` equal slices of ``[0, duration)``, in seconds, increasing."""
    if n_frames < 1:
        raise ValueError("n_frames must be >= 1")
    return (np.arange(n_frames) + 0.5) * (max(duration_seconds, 0.0) / n_frames)


def media_duration(
    uri: str, modality: str, probed_seconds: float | None, limits: MediaLimits | None = None
) -> float:
    """The probed duration, or (when unknown) the one the main stream's packets span."""
    if probed_seconds is not None and probed_seconds > 0:
        return probed_seconds
    return demuxed_duration(uri, modality, limits)


def iter_video_segments(
    uri: str,
    segments: Sequence[Segment],
    n_frames: int,
    image_size: int,
    *,
    seek_gap_seconds: float = 5.0,
    limits: MediaLimits | None = None,
) -> Iterator[tuple[Segment, npt.NDArray[np.uint8]]]:
    """Decode ``n_frames`` frames per segment, sampled at the centres of equal slices of it.

    One pass over the stream, frame by frame: a decoded frame is kept only if it is the one on
    screen at a sample time, and each segment is yielded as soon as its frames are complete, so
    memory holds one segment whatever the video's length. When the next sample time is more
    than ``seek_gap_seconds`` ahead, the decoder seeks (to the keyframe before it) instead of
    decoding everything in between. Resizing (a plain squash to ``image_size`` squared, no crop)
    happens in FFmpeg's scaler.

    Yields:
        ``(segment, frames)``; frames are uint8 ``(n_frames, image_size, image_size, 3)`` RGB.

    Decoding stops with a :class:`LimitError` once it has produced more frames than the
    frame-rate limit allows for the segments' span (timestamps that never advance, an absurd
    rate) or meets a frame larger than the frame-size limit (a resolution switch mid-stream).

    Raises:
        MediaError: no video stream, or it does not decode, or a limit is exceeded.
    """
    limits = limits or MediaLimits()
    owners = [segment for segment in segments for _ in range(n_frames)]
    times = [
        segment.start + float(t)
        for segment in segments
        for t in sample_times(segment.seconds, n_frames)
    ]
    span = segments[-1].end if segments else 0.0
    with open_container(uri, max_frame_pixels=limits.max_frame_pixels) as container:
        sampler = _FrameSampler(container, _video_decoder(container, uri), uri, image_size, limits)
        images = sampler.images_at(times, span, seek_gap_seconds)
        yield from _stack_by_segment(owners, images, n_frames)


def _video_decoder(container: Any, uri: str) -> Any:
    """The main video stream, its decoder set up for sampling."""
    stream = main_video_stream(container)
    if stream is None:
        raise MediaError(f"{uri} has no video stream")
    # One thread per decoder: extraction runs several decoders (PIPELINE_DECODE_WORKERS) beside
    # a CNN that keeps every core busy, so FFmpeg's own threads would only add CPU time
    # (frame threading costs ~5-10% more per frame) and memory (each thread allocates
    # per-frame-size tables, which a hostile frame size would multiply).
    stream.thread_type = "NONE"
    stream.codec_context.thread_count = 1
    return stream


def _stack_by_segment(
    owners: Sequence[Segment], images: Iterable[npt.NDArray[np.uint8]], n_frames: int
) -> Iterator[tuple[Segment, npt.NDArray[np.uint8]]]:
    """Group one image per sample time (``owners[i]`` is the segment of the i-th) into each
    segment's ``(n_frames, S, S, 3)`` stack, yielded as soon as it is complete."""
    picked: list[npt.NDArray[np.uint8]] = []
    for owner, image in zip(owners, images, strict=True):
        picked.append(image)
        if len(picked) == n_frames:
            yield owner, np.stack(picked)
            picked = []


#: How far the sampler reads packets ahead of the decoder: far enough to see the next keyframe
#: of a usual GOP (2-10 s), bounded in bytes so that huge packets cannot take the memory.
LOOKAHEAD_PACKETS = 300
LOOKAHEAD_BYTES = 16 << 20
#: How many packets after a frame (in decode order) are searched for the one that replaces it
#: on screen: B-frame reordering keeps it within a few packets.
REORDER_PACKETS = 16


@dataclass
class _Queued:
    """A demuxed packet waiting in the lookahead, with its time (seconds from the stream's
    start; None without a timestamp) and what the sampler decided for it."""

    packet: Any
    time: float | None
    keyframe: bool
    drop: bool = False  # no sample needs any frame from here to the next keyframe


class _FrameSampler:
    """Walks a video stream's decoded frames forward and picks the frame on screen (the newest
    decoded one, until the next) at each of a list of increasing times, seeking over long gaps.

    Only frames a sample can need are decoded; the images are exactly those of decoding every
    frame. The packets are read up to :data:`LOOKAHEAD_PACKETS` ahead of the decoder, so that
    (1) the packets between the last frame a sample needs and the next keyframe are never sent
    to the decoder (nothing after a keyframe refers to them), and (2) a frame that another
    frame replaces on screen before the next sample time is decoded with ``skip_frame =
    NONREF``: the decoder drops it if no other frame refers to it (most B-frames).

    Every packet read counts against the frame budget, and every decoded frame is checked
    against the frame-size limit; each picked frame is converted to RGB once, however many
    sample times it covers.
    """

    def __init__(
        self, container: Any, stream: Any, uri: str, image_size: int, limits: MediaLimits
    ) -> None:
        self.container, self.stream, self.uri = container, stream, uri
        self.to_rgb = _RgbScaler(image_size)
        self.limits = limits
        self.origin = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        base = stream.time_base  # None for a 0/0 time base: no packet can be placed
        self.tick = (base.numerator, base.denominator) if base else None
        self.times: Sequence[float] = ()
        self.budget = 0
        self.span_seconds = 0.0
        self.read = 0  # packets taken from the demuxer: each one a frame, decoded or not
        self.decoded = 0  # frames out of the decoder
        self.skipped = 0  # packets never sent to the decoder
        self.frames: Iterator[Any] = iter(())
        self.shown: Any = None  # the frame on screen; None before the first (or after a seek)
        self.shown_rgb: npt.NDArray[np.uint8] | None = None

    def images_at(
        self, times: Sequence[float], span_seconds: float, seek_gap_seconds: float
    ) -> Iterator[npt.NDArray[np.uint8]]:
        """One uint8 ``(S, S, 3)`` RGB image per time (seconds from the stream's start,
        increasing); times after the last frame get the last frame."""
        self.times, self.span_seconds = times, span_seconds
        self.budget = self.limits.frame_budget(span_seconds)
        self.frames = self._needed_frames()
        k = 0  # next time
        sought = -1  # the time the decoder last sought to (never seek twice for one)
        last: npt.NDArray[np.uint8] | None = None
        try:
            while k < len(times):
                frame = next(self.frames, None)
                if frame is None:
                    break
                t = self._checked_time(frame)
                while k < len(times) and times[k] < t:
                    if self.shown is None:  # a sample time before the first frame's timestamp
                        self._show(frame)
                    last = self._shown_image()
                    k += 1
                    yield last
                self._show(frame)
                if k < len(times) and k != sought and times[k] - t > seek_gap_seconds:
                    sought = k
                    self._seek(times[k])
        except av.FFmpegError as exc:
            raise MediaError(f"cannot decode {self.uri}: {describe_av_error(exc)}") from exc
        yield from self._repeat_last(len(times) - k, last)

    # The decoder's side -----------------------------------------------------------------------

    def _needed_frames(self) -> Iterator[Any]:
        """Decoded frames in display order, from the packets some sample time may need."""
        packets = self.container.demux(self.stream)
        ahead: deque[_Queued] = deque()
        ahead_bytes = 0
        codec = self.stream.codec_context
        exhausted = False
        while True:
            while (
                not exhausted and len(ahead) < LOOKAHEAD_PACKETS and ahead_bytes < LOOKAHEAD_BYTES
            ):
                packet = next(packets, None)
                if packet is None:
                    exhausted = True
                    break
                ahead.append(self._queued(packet))
                ahead_bytes += packet.size
                if ahead[-1].keyframe:
                    self._drop_before_keyframe(ahead)
            if not ahead:
                return
            item = ahead.popleft()
            ahead_bytes -= item.packet.size
            if item.packet.size:  # not the end-of-stream packet that drains the decoder
                self._count_packet()
            if item.drop:
                self.skipped += 1
                continue
            codec.skip_frame = "NONREF" if self._replaced_before_needed(item, ahead) else "DEFAULT"
            yield from item.packet.decode()

    def _queued(self, packet: Any) -> _Queued:
        time = None  # unplaced: decoded, never skipped
        if packet.pts is not None and packet.size and self.tick:
            numerator, denominator = self.tick  # as PyAV computes frame.time, to the last bit
            time = float(packet.pts) * numerator / denominator - self.origin
        return _Queued(packet, time, bool(packet.is_keyframe) and time is not None)

    def _count_packet(self) -> None:
        self.read += 1
        if self.read > self.budget:
            raise LimitError(
                f"{self.uri}: read {self.read:,} frames for {self.span_seconds:.1f} s of video "
                "(timestamps that do not advance, or an absurd frame rate)",
                "PIPELINE_MAX_FPS",
            )

    def _drop_before_keyframe(self, ahead: deque[_Queued]) -> None:
        """Mark the packets just before the keyframe ``ahead[-1]`` that no sample needs.

        Walking back from the keyframe at ``K`` s, a run of packets whose earliest frame is at
        ``m`` s is unneeded when no sample time lies in ``[m, K)``: at those times another frame
        is on screen. Frames after the keyframe do not refer to them (leading B-frames of an
        open GOP may, but they are replaced by the keyframe before any later sample time).
        """
        key_time = ahead[-1].time
        assert key_time is not None
        first_at_key = bisect.bisect_left(self.times, key_time)
        earliest = math.inf
        for item in itertools.islice(reversed(ahead), 1, None):
            if item.keyframe or item.drop or item.time is None:
                return  # the previous GOP, already judged, or a frame that cannot be placed
            earliest = min(earliest, item.time)
            if bisect.bisect_left(self.times, earliest) < first_at_key:
                return  # a sample time falls on this run
            item.drop = True

    def _replaced_before_needed(self, item: _Queued, ahead: deque[_Queued]) -> bool:
        """Whether a later frame (within the next :data:`REORDER_PACKETS` packets) takes this
        one's place on screen before the first sample time at or after it."""
        if item.time is None or item.keyframe:
            return False
        k = bisect.bisect_left(self.times, item.time)
        if k == len(self.times):
            return True  # after the last sample time
        needed_at = self.times[k]
        return any(
            other.time is not None and item.time < other.time <= needed_at and not other.drop
            for other in itertools.islice(ahead, REORDER_PACKETS)
        )

    # The sampler's side -----------------------------------------------------------------------

    def _checked_time(self, frame: Any) -> float:
        """The frame's time in seconds from the stream's start, once it passes the limits."""
        t = (frame.time - self.origin) if frame.time is not None else self.decoded / 25.0
        self.decoded += 1
        self.limits.check_frame_size(frame.width, frame.height)
        return t

    def _show(self, frame: Any) -> None:
        if self.shown is not frame:
            self.shown, self.shown_rgb = frame, None

    def _shown_image(self) -> npt.NDArray[np.uint8]:
        if self.shown_rgb is None:
            self.shown_rgb = self.to_rgb(self.shown)
        return self.shown_rgb

    def _seek(self, seconds: float) -> None:
        """Restart decoding at the keyframe before ``seconds``; nothing is on screen until the
        first frame decoded from there."""
        target = int((seconds + self.origin) / self.stream.time_base)
        self.container.seek(target, stream=self.stream, backward=True, any_frame=False)
        self.frames = self._needed_frames()
        self.shown, self.shown_rgb = None, None

    def _repeat_last(
        self, missing: int, last: npt.NDArray[np.uint8] | None
    ) -> Iterator[npt.NDArray[np.uint8]]:
        """The last frame again for the ``missing`` sample times after the stream ended."""
        if missing <= 0:
            return
        if self.shown is not None:
            last = self._shown_image()
        if last is None:
            raise MediaError(f"{self.uri}: the video stream holds no decodable frame")
        for _ in range(missing):
            yield last


class _RgbScaler:
    """FFmpeg's scaler, kept for a whole video: squashes a frame to ``image_size`` squared RGB.

    ``frame.to_ndarray(width=..., height=...)`` builds a new scaler for every frame, and with
    it (PyAV 18, FFmpeg 8) the scaling filters and, by default, a thread pool: that set-up
    cost more CPU than the scaling itself. One scaler, one thread (the CNN has the cores),
    bilinear as before: the same pixels.
    """

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size
        self.reformatter = av.video.reformatter.VideoReformatter()

    def __call__(self, frame: Any) -> npt.NDArray[np.uint8]:
        size = self.image_size
        scaled = self.reformatter.reformat(
            frame, size, size, "rgb24", interpolation="BILINEAR", threads=1
        )
        return np.ascontiguousarray(scaled.to_ndarray(), dtype=np.uint8)


def has_audio_stream(uri: str) -> bool:
    with open_container(uri) as container:
        return bool(container.streams.audio)


def iter_audio_chunks(
    container: Any, uri: str, sample_rate: int
) -> Iterator[npt.NDArray[np.float32]]:
    """Mono float32 sample chunks ``(n,)`` at ``sample_rate`` Hz from the first audio stream of
    an open container, in order, decoded as they are asked for.

    Raises:
        MediaError: no audio stream, or it does not decode.
    """
    if not container.streams.audio:
        raise MediaError(f"{uri} has no audio stream")
    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    try:
        for frame in container.decode(stream):
            frame.pts = None  # resample by sample count; gaps in timestamps are not silence
            for out in resampler.resample(frame):
                yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
        for out in resampler.resample(None):
            yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
    except av.FFmpegError as exc:
        raise MediaError(f"cannot decode audio of {uri}: {describe_av_error(exc)}") from exc


def iter_audio_segments(
    uri: str, segments: Sequence[Segment], sample_rate: int
) -> Iterator[tuple[Segment, npt.NDArray[np.float32]]]:
    """Decode an audio track segment by segment: mono float32 samples of each ``[start, end)``.

    Samples are streamed; memory holds one segment plus one decoded chunk. The last segment
    takes the audio that remains (the track may be slightly shorter or longer than probed), up
    to 10% (at least 1 s) past its planned end: a track much longer than its header claims is
    cut there, never read to the end.

    Raises:
        MediaError: no audio stream, or it does not decode, or it holds no samples.
    """
    bounds = [round(seg.end * sample_rate) for seg in segments]
    end = segments[-1].end if segments else 0.0
    stop = round((end + max(1.0, 0.1 * end)) * sample_rate)
    buffer: list[npt.NDArray[np.float32]] = []
    buffered = 0  # samples in buffer
    consumed = 0  # samples of the track before the buffer
    k = 0
    with open_container(uri) as container:
        for chunk in iter_audio_chunks(container, uri, sample_rate):
            buffer.append(chunk[: max(0, stop - consumed - buffered)])
            buffered += buffer[-1].size
            while k < len(segments) - 1 and consumed + buffered >= bounds[k]:
                joined = np.concatenate(buffer)
                cut = bounds[k] - consumed
                yield segments[k], joined[:cut]
                buffer, buffered, consumed = [joined[cut:]], joined.size - cut, bounds[k]
                k += 1
            if consumed + buffered >= stop:
                break
    if consumed + buffered == 0:
        raise MediaError(f"{uri}: the audio stream holds no decodable samples")
    tail = np.concatenate(buffer) if buffer else np.zeros(0, np.float32)
    for segment in segments[k:]:  # the last segment (and any the track ended before)
        yield segment, tail
        tail = np.zeros(0, np.float32)
