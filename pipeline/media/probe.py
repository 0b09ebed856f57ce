"""Probing media files: what their streams claim, checked against the cost limits.

Probing reads the container's headers, checks each claim (streams, frame size, frame rate,
sample rate, duration) against :class:`~pipeline.media.limits.MediaLimits` before any frame is
decoded, then decodes one frame to prove the file decodes at all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import av

from pipeline.errors import MediaError
from pipeline.media.container import describe_av_error, main_video_stream, open_container
from pipeline.media.limits import MediaLimits
from pipeline.text import printable


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
        stream, is_video = _main_stream(container, shown)
        rate, duration = _check_claims(container, stream, is_video, limits, size_bytes)
        _first_frame(container, stream, shown, limits)
        # Read after the first frame: decoding it can correct what the headers said.
        info = _media_info(container, stream, is_video, rate, duration)
    if info.duration_seconds is None:  # the headers do not say: measure it from the packets
        measured = demuxed_duration(uri, info.modality, limits, name=shown)
        limits.check_duration(measured, size_bytes)
        info = MediaInfo(**{**info.as_row(), "duration_seconds": measured})
    return info


def _main_stream(container: Any, name: str) -> tuple[Any, bool]:
    """The stream a clip is made of (its video, else its first audio stream), and whether it is
    video."""
    video = main_video_stream(container)
    stream = video if video is not None else next(iter(container.streams.audio), None)
    if stream is None:
        raise MediaError(f"{name} has neither a video nor an audio stream")
    if stream.codec_context is None:
        raise MediaError(f"{name}: FFmpeg has no decoder for its {stream.type} stream")
    return stream, video is not None


def _check_claims(
    container: Any, stream: Any, is_video: bool, limits: MediaLimits, size_bytes: int | None
) -> tuple[Any, float | None]:
    """Check what the headers claim against ``limits``, decoding nothing.

    Returns:
        The video's frame rate (a fraction; None for audio or when unknown) and the duration in
        seconds (None when the headers record none).
    """
    context = stream.codec_context
    rate = None
    if is_video:
        limits.check_frame_size(context.width, context.height)
        rate = stream.average_rate
        limits.check_fps(float(rate) if rate else None)
        rate = rate or stream.guessed_rate
    else:
        limits.check_sample_rate(context.sample_rate)
    container_duration = container.duration / av.time_base if container.duration else None
    duration = _stream_duration(stream) or container_duration
    if duration is None or duration <= 0:
        duration = None
    limits.check_duration(duration, size_bytes)
    return rate, duration


def _media_info(
    container: Any, stream: Any, is_video: bool, rate: Any, duration: float | None
) -> MediaInfo:
    context = stream.codec_context
    if is_video:
        return MediaInfo(
            modality="video",
            container_format=container.format.name,
            codec=context.name,
            duration_seconds=duration,
            fps=float(rate) if rate else None,
            width=context.width,
            height=context.height,
        )
    return MediaInfo(
        modality="audio",
        container_format=container.format.name,
        codec=context.name,
        duration_seconds=duration,
        sample_rate=context.sample_rate,
        channels=context.channels,
    )


def _first_frame(container: Any, stream: Any, name: str, limits: MediaLimits) -> None:
    try:
        for frame in container.decode(stream):
            if stream.type == "video":
                limits.check_frame_size(frame.width, frame.height)
            return
    except av.FFmpegError as exc:
        raise MediaError(f"cannot decode {name}: {describe_av_error(exc)}") from exc
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
        stream = _stream_of(container, modality, shown)
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
            raise MediaError(f"cannot read {shown}: {describe_av_error(exc)}") from exc
    if origin is None:
        raise MediaError(f"{shown}: the {modality} stream has no timestamps to measure")
    return end - origin


def _stream_of(container: Any, modality: str, name: str) -> Any:
    """The main video stream, or the first audio stream."""
    stream = main_video_stream(container) if modality == "video" else None
    if stream is None and modality == "audio" and container.streams.audio:
        stream = container.streams.audio[0]
    if stream is None:
        raise MediaError(f"{name} has no {modality} stream")
    return stream


def _stream_duration(stream: Any) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return None
