"""Probing and streaming decode of media files with PyAV (FFmpeg bundled in its wheels).

Nothing here holds a whole video in memory: frames are decoded one at a time and only the
sampled ones are kept (already resized to the CNN input size by FFmpeg's scaler). Audio decoding
stops once it has the samples the caller asked for.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from pipeline import storage
from pipeline.errors import LimitError, MediaError
from pipeline.media.limits import MediaLimits
from pipeline.text import printable

log = logging.getLogger(__name__)

_ATTACHED_PIC = int(getattr(getattr(av.stream, "Disposition", None), "attached_pic", 1024))


@dataclass(frozen=True)
class MediaInfo:
    """What probing found; field names match the ``media_files`` columns."""

    modality: str  # 'video' | 'audio'
    container_format: str
    codec: str
    duration_seconds: float | None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    sample_rate: int | None = None
    channels: int | None = None

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def open_container(
    uri: str, *, max_frame_pixels: int | None = None, name: str | None = None
) -> Iterator[Any]:
    """Open a media file (local path or object-store URI) for reading, as a PyAV container.

    ``max_frame_pixels`` is passed to FFmpeg's decoders (``max_pixels``), so probing a file
    that claims huge frames does not allocate them. ``name`` is how errors refer to the file
    (default: ``uri``).
    """
    options = {"max_pixels": str(max_frame_pixels)} if max_frame_pixels else {}
    shown = name or printable(uri)
    try:
        if storage.is_remote(uri):
            with (
                storage.open_read(uri) as handle,
                av.open(handle, mode="r", options=options) as container,
            ):
                yield _limit_decoders(container, options)
        else:
            with av.open(storage.local_path(uri), mode="r", options=options) as container:
                yield _limit_decoders(container, options)
    except (av.FFmpegError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise MediaError(f"cannot decode {shown}: {_describe(exc)}") from exc


def _limit_decoders(container: Any, options: dict[str, str]) -> Any:
    """Give every video decoder the frame-size cap too: PyAV passes ``av.open``'s options only
    to stream detection, so a frame larger than the header claims would otherwise be decoded
    in full before anyone could look at its size."""
    if options:
        for stream in container.streams.video:
            if stream.codec_context is not None:
                stream.codec_context.options = {**stream.codec_context.options, **options}
    return container


def _video_stream(container: Any) -> Any | None:
    for stream in container.streams.video:
        if not int(stream.disposition) & _ATTACHED_PIC:  # skip cover art in audio files
            return stream
    return None


def probe_media(
    uri: str,
    limits: MediaLimits | None = None,
    *,
    size_bytes: int | None = None,
    name: str | None = None,
) -> MediaInfo:
    """Read a file's streams, check what they claim against ``limits``, then decode the first
    frame, so a file that probes is decodable and affordable.

    The checks (stream count, frame size, frame rate, sample rate, duration, and duration
    backed by ``size_bytes``) run on the container's headers before any frame is decoded. A
    duration the headers do not record is measured from packet timestamps (no decoding).

    Raises:
        LimitError: a claim is over a limit (the message names the setting).
        MediaError: the file is not media, has no video/audio stream, or does not decode.
    """
    limits = limits or MediaLimits()
    shown = name or printable(uri)
    with open_container(uri, max_frame_pixels=limits.max_frame_pixels, name=shown) as container:
        limits.check_streams(len(container.streams))
        fmt = container.format.name
        container_duration = container.duration / av.time_base if container.duration else None
        video = _video_stream(container)
        stream = video if video is not None else next(iter(container.streams.audio), None)
        if stream is None:
            raise MediaError(f"{shown} has neither a video nor an audio stream")
        context = stream.codec_context
        if context is None:
            raise MediaError(f"{shown}: FFmpeg has no decoder for its {stream.type} stream")
        if video is not None:
            limits.check_frame_size(context.width, context.height)
            rate = video.average_rate
            limits.check_fps(float(rate) if rate else None)
            rate = rate or video.guessed_rate
        else:
            limits.check_sample_rate(context.sample_rate)
        duration = _stream_duration(stream) or container_duration
        if duration is None or duration <= 0:
            duration = None
        limits.check_duration(duration, size_bytes)
        _first_frame(container, stream, shown, limits)
        info = MediaInfo(
            modality="video" if video is not None else "audio",
            container_format=fmt,
            codec=context.name,
            duration_seconds=duration,
            fps=float(rate) if video is not None and rate else None,
            width=context.width if video is not None else None,
            height=context.height if video is not None else None,
            sample_rate=None if video is not None else context.sample_rate,
            channels=None if video is not None else context.channels,
        )
    if info.duration_seconds is None:  # the headers do not say: measure it from the packets
        measured = demuxed_duration(uri, info.modality, limits, name=shown)
        limits.check_duration(measured, size_bytes)
        info = MediaInfo(**{**info.as_row(), "duration_seconds": measured})
    return info


def _first_frame(container: Any, stream: Any, name: str, limits: MediaLimits) -> None:
    try:
        for frame in container.decode(stream):
            if stream.type == "video":
                limits.check_frame_size(frame.width, frame.height)
            return
    except av.FFmpegError as exc:
        raise MediaError(f"cannot decode {name}: {_describe(exc)}") from exc
    raise MediaError(f"{name}: the {stream.type} stream holds no decodable frame")


def demuxed_duration(
    uri: str, modality: str, limits: MediaLimits | None = None, *, name: str | None = None
) -> float:
    """Duration in seconds from the timestamps of the main stream's packets (read, not
    decoded), for containers whose headers record none. Reading stops once it is past the
    duration limit.

    Raises:
        LimitError: the packets run past ``limits.max_duration_seconds``.
        MediaError: no such stream, or no packet has a timestamp.
    """
    limits = limits or MediaLimits()
    shown = name or printable(uri)
    with open_container(uri, max_frame_pixels=limits.max_frame_pixels, name=shown) as container:
        stream = _video_stream(container) if modality == "video" else None
        if stream is None and modality == "audio" and container.streams.audio:
            stream = container.streams.audio[0]
        if stream is None:
            raise MediaError(f"{shown} has no {modality} stream")
        rate = stream.average_rate if modality == "video" else None
        step = 1.0 / float(rate) if rate else 0.0  # for packets that carry no duration
        origin: float | None = None
        end = 0.0
        try:
            for packet in container.demux(stream):
                if packet.pts is None or packet.time_base is None:
                    continue
                start = float(packet.pts * packet.time_base)
                origin = start if origin is None else min(origin, start)
                length = float(packet.duration * packet.time_base) if packet.duration else step
                end = max(end, start + length)
                if end - origin > limits.max_duration_seconds:
                    limits.check_duration(end - origin, None)
        except av.FFmpegError as exc:
            raise MediaError(f"cannot read {shown}: {_describe(exc)}") from exc
    if origin is None:
        raise MediaError(f"{shown}: the {modality} stream has no timestamps to measure")
    return end - origin


def _stream_duration(stream: Any) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return None


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
    budget = limits.frame_budget(segments[-1].end if segments else 0.0)
    targets = [
        (segment, segment.start + t)
        for segment in segments
        for t in sample_times(segment.seconds, n_frames)
    ]
    picked: list[npt.NDArray[np.uint8]] = []
    with open_container(uri, max_frame_pixels=limits.max_frame_pixels) as container:
        stream = _video_stream(container)
        if stream is None:
            raise MediaError(f"{uri} has no video stream")
        stream.thread_type = "AUTO"
        # Each decoder thread allocates per-frame-size tables; a few threads decode small frames
        # as fast as many, and keep a hostile frame size from multiplying memory.
        stream.codec_context.thread_count = 2
        origin = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        previous: Any = None  # the newest decoded frame: the one on screen until the next
        previous_rgb: npt.NDArray[np.uint8] | None = None
        last_emitted: npt.NDArray[np.uint8] | None = None
        k = 0  # next target
        sought = -1  # the target the decoder last sought to (never seek twice for one)
        index = 0
        frames = container.decode(stream)
        try:
            while k < len(targets):
                frame = next(frames, None)
                if frame is None:
                    break
                t = (frame.time - origin) if frame.time is not None else index / 25.0
                index += 1
                if index > budget:
                    raise LimitError(
                        f"{uri}: decoded {index:,} frames for {segments[-1].end:.1f} s of video "
                        "(timestamps that do not advance, or an absurd frame rate)",
                        "PIPELINE_MAX_FPS",
                    )
                limits.check_frame_size(frame.width, frame.height)
                while k < len(targets) and targets[k][1] < t:
                    if previous is None:  # a sample time before the first frame's timestamp
                        previous, previous_rgb = frame, None
                    if previous_rgb is None:
                        previous_rgb = _to_rgb(previous, image_size)
                    picked.append(previous_rgb)
                    last_emitted = previous_rgb
                    k += 1
                    if len(picked) == n_frames:
                        yield targets[k - 1][0], np.stack(picked)
                        picked = []
                if previous is not frame:
                    previous, previous_rgb = frame, None
                if k < len(targets) and k != sought and targets[k][1] - t > seek_gap_seconds:
                    sought = k
                    seek_to = int((targets[k][1] + origin) / stream.time_base)
                    container.seek(seek_to, stream=stream, backward=True, any_frame=False)
                    frames = container.decode(stream)
                    previous, previous_rgb = None, None
        except av.FFmpegError as exc:
            raise MediaError(f"cannot decode {uri}: {_describe(exc)}") from exc
        if k < len(targets):  # sample times after the last frame's timestamp
            if previous is not None:
                last_emitted = (
                    previous_rgb if previous_rgb is not None else _to_rgb(previous, image_size)
                )
            if last_emitted is None:
                raise MediaError(f"{uri}: the video stream holds no decodable frame")
        while k < len(targets):
            picked.append(last_emitted)  # type: ignore[arg-type]
            k += 1
            if len(picked) == n_frames:
                yield targets[k - 1][0], np.stack(picked)
                picked = []


def read_video_frames(
    uri: str, n_frames: int, image_size: int, duration_seconds: float | None = None
) -> npt.NDArray[np.uint8]:
    """``n_frames`` frames sampled uniformly over a whole video (one segment), uint8
    ``(n_frames, image_size, image_size, 3)`` RGB."""
    duration = media_duration(uri, "video", duration_seconds)
    [(_, frames)] = iter_video_segments(
        uri, plan_segments(duration, duration or 1.0), n_frames, image_size
    )
    return frames


def _to_rgb(frame: Any, image_size: int) -> npt.NDArray[np.uint8]:
    array = frame.to_ndarray(format="rgb24", width=image_size, height=image_size)
    return np.ascontiguousarray(array, dtype=np.uint8)


def has_audio_stream(uri: str) -> bool:
    with open_container(uri) as container:
        return bool(container.streams.audio)


def _audio_chunks(container: Any, uri: str, sample_rate: int) -> Iterator[npt.NDArray[np.float32]]:
    """Mono float32 sample chunks at ``sample_rate`` from the first audio stream, in order."""
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
        raise MediaError(f"cannot decode audio of {uri}: {_describe(exc)}") from exc


def read_audio(
    uri: str, sample_rate: int, max_seconds: float | None = None
) -> npt.NDArray[np.float32]:
    """Decode an audio track to mono float samples at ``sample_rate``, stopping at ``max_seconds``.

    Args:
        uri: local path or object-store URI of an audio file (or a video with an audio track).
        sample_rate: output rate in Hz (FFmpeg's resampler converts).
        max_seconds: stop decoding once this much audio is collected (None: all of it).

    Returns:
        float32 array ``(n_samples,)``, mono, nominally in [-1, 1].

    Raises:
        MediaError: no audio stream, or it does not decode.
    """
    limit = round(max_seconds * sample_rate) if max_seconds else None
    chunks: list[npt.NDArray[np.float32]] = []
    total = 0
    with open_container(uri) as container:
        for chunk in _audio_chunks(container, uri, sample_rate):
            chunks.append(chunk)
            total += chunk.size
            if limit is not None and total >= limit:
                break
    if not total:
        raise MediaError(f"{uri}: the audio stream holds no decodable samples")
    samples = np.concatenate(chunks)
    return samples[:limit] if limit is not None else samples


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
        for chunk in _audio_chunks(container, uri, sample_rate):
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


def _describe(exc: BaseException) -> str:
    # FFmpeg errors carry the file name again in str(exc); strerror is just the reason.
    text = (getattr(exc, "strerror", None) or str(exc)).strip() or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."
