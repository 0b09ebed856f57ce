"""Probing and streaming decode of media files with PyAV (FFmpeg bundled in its wheels).

Nothing here holds a whole video in memory: frames are decoded one at a time and only the
sampled ones are kept (already resized to the CNN input size by FFmpeg's scaler). Audio decoding
stops once it has the samples the caller asked for.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from pipeline import storage
from pipeline.errors import MediaError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".m4a")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + AUDIO_EXTENSIONS

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
def open_container(uri: str) -> Iterator[Any]:
    """Open a media file (local path or object-store URI) for reading, as a PyAV container."""
    try:
        if storage.is_remote(uri):
            with storage.open_read(uri) as handle, av.open(handle, mode="r") as container:
                yield container
        else:
            with av.open(storage.local_path(uri), mode="r") as container:
                yield container
    except (av.FFmpegError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise MediaError(f"cannot decode {uri}: {_describe(exc)}") from exc


def _video_stream(container: Any) -> Any | None:
    for stream in container.streams.video:
        if not int(stream.disposition) & _ATTACHED_PIC:  # skip cover art in audio files
            return stream
    return None


def probe_media(uri: str) -> MediaInfo:
    """Read a file's streams and decode its first frame, so a file that probes is decodable.

    Raises:
        MediaError: the file is not media, has no video/audio stream, or does not decode.
    """
    with open_container(uri) as container:
        fmt = container.format.name
        container_duration = container.duration / av.time_base if container.duration else None
        video = _video_stream(container)
        if video is not None:
            duration = _stream_duration(video) or container_duration
            rate = video.average_rate or video.guessed_rate
            _first_frame(container, video, uri)
            return MediaInfo(
                modality="video",
                container_format=fmt,
                codec=video.codec_context.name,
                duration_seconds=duration,
                fps=float(rate) if rate else None,
                width=video.codec_context.width,
                height=video.codec_context.height,
            )
        if container.streams.audio:
            audio = container.streams.audio[0]
            _first_frame(container, audio, uri)
            return MediaInfo(
                modality="audio",
                container_format=fmt,
                codec=audio.codec_context.name,
                duration_seconds=_stream_duration(audio) or container_duration,
                sample_rate=audio.codec_context.sample_rate,
                channels=audio.codec_context.channels,
            )
    raise MediaError(f"{uri} has neither a video nor an audio stream")


def _first_frame(container: Any, stream: Any, uri: str) -> None:
    try:
        for _frame in container.decode(stream):
            return
    except av.FFmpegError as exc:
        raise MediaError(f"cannot decode {uri}: {_describe(exc)}") from exc
    raise MediaError(f"{uri}: the {stream.type} stream holds no decodable frame")


def _stream_duration(stream: Any) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return None


def sample_times(duration_seconds: float, n_frames: int) -> npt.NDArray[np.float64]:
    """Centres of ``n_frames`` equal slices of ``[0, duration)``, in seconds, increasing."""
    if n_frames < 1:
        raise ValueError("n_frames must be >= 1")
    return (np.arange(n_frames) + 0.5) * (max(duration_seconds, 0.0) / n_frames)


def read_video_frames(
    uri: str, n_frames: int, image_size: int, duration_seconds: float | None = None
) -> npt.NDArray[np.uint8]:
    """Decode ``n_frames`` frames sampled uniformly over a video, resized to a square.

    Frames are streamed: each decoded frame is dropped unless it is the last one at or before a
    sample time. Resizing (a plain squash to ``image_size`` x ``image_size``, no crop) happens in
    FFmpeg's scaler.

    Args:
        uri: local path or object-store URI of the video.
        n_frames: frames to sample.
        image_size: output rows = cols, pixels.
        duration_seconds: clip duration if known (from probing); otherwise found by decoding.

    Returns:
        uint8 array ``(n_frames, image_size, image_size, 3)``, RGB, values 0-255.

    Raises:
        MediaError: the file has no video stream or decodes to no frame.
    """
    if duration_seconds is None or duration_seconds <= 0:
        duration_seconds = _decoded_duration(uri)
    targets = sample_times(duration_seconds, n_frames)
    picked: list[npt.NDArray[np.uint8]] = []
    with open_container(uri) as container:
        stream = _video_stream(container)
        if stream is None:
            raise MediaError(f"{uri} has no video stream")
        stream.thread_type = "AUTO"
        start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        previous: Any = None  # the newest decoded frame: the one on screen until the next
        previous_rgb: npt.NDArray[np.uint8] | None = None
        index = 0
        try:
            for frame in container.decode(stream):
                t = (frame.time - start) if frame.time is not None else index / 25.0
                index += 1
                while len(picked) < n_frames and targets[len(picked)] < t:
                    if previous is None:  # a sample time before the first frame's timestamp
                        previous, previous_rgb = frame, None
                    if previous_rgb is None:
                        previous_rgb = _to_rgb(previous, image_size)
                    picked.append(previous_rgb)
                if len(picked) == n_frames:
                    break
                if previous is not frame:
                    previous, previous_rgb = frame, None
        except av.FFmpegError as exc:
            raise MediaError(f"cannot decode {uri}: {_describe(exc)}") from exc
        if previous is None and not picked:
            raise MediaError(f"{uri}: the video stream holds no decodable frame")
        if len(picked) < n_frames:  # sample times after the last frame's timestamp
            last = previous_rgb if previous_rgb is not None else _to_rgb(previous, image_size)
            picked.extend([last] * (n_frames - len(picked)))
    return np.stack(picked)


def _to_rgb(frame: Any, image_size: int) -> npt.NDArray[np.uint8]:
    array = frame.to_ndarray(format="rgb24", width=image_size, height=image_size)
    return np.ascontiguousarray(array, dtype=np.uint8)


def _decoded_duration(uri: str) -> float:
    """Duration from the last frame's timestamp, for containers that do not record one."""
    with open_container(uri) as container:
        stream = _video_stream(container)
        if stream is None:
            raise MediaError(f"{uri} has no video stream")
        last = 0.0
        count = 0
        for frame in container.decode(stream):
            count += 1
            last = frame.time if frame.time is not None else count / 25.0
        if count == 0:
            raise MediaError(f"{uri}: the video stream holds no decodable frame")
        rate = float(stream.average_rate or 25)
        return last + 1.0 / rate


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
        if not container.streams.audio:
            raise MediaError(f"{uri} has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        try:
            for frame in container.decode(stream):
                frame.pts = None  # resample by sample count; gaps in timestamps are not silence
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                    chunks.append(chunk)
                    total += chunk.size
                if limit is not None and total >= limit:
                    break
            else:
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
        except av.FFmpegError as exc:
            raise MediaError(f"cannot decode audio of {uri}: {_describe(exc)}") from exc
    if not chunks:
        raise MediaError(f"{uri}: the audio stream holds no decodable samples")
    samples = np.concatenate(chunks)
    return samples[:limit] if limit is not None else samples


def _describe(exc: BaseException) -> str:
    # FFmpeg errors carry the file name again in str(exc); strerror is just the reason.
    text = (getattr(exc, "strerror", None) or str(exc)).strip() or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."
