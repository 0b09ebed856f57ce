"""Turn one clip into the image sequences the CNN sees, segment by segment.

A clip is cut into segments (see :func:`pipeline.media.decode.plan_segments`); each segment gives up
to two sequences, one per *stream*:

* ``video``: ``frames_per_segment`` frames sampled uniformly over the segment (videos only);
* ``audio``: log-mel spectrogram windows of the segment's audio (see
  :mod:`pipeline.media.spectrogram`), at most ``max_frames``; for a video, its audio track on the
  same segment boundaries (an empty sequence when it has none).

Sequences keep their true length; padding to a batch's longest sequence happens at training
and scoring time, where the model masks it. Everything is streamed: memory holds one segment.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from pipeline.config import Settings
from pipeline.errors import MediaError
from pipeline.media.limits import MediaLimits

if TYPE_CHECKING:
    from pipeline.media.decode import Segment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SequenceSpec:
    """The settings that shape a clip's image sequences: exactly the fields of
    :meth:`Settings.sequence_settings` (those marked ``Changes`` in :mod:`pipeline.config`, less
    the encoder's), so a newly marked setting reaches the decoders or fails loudly here.

    Model metadata stores ``asdict(spec)`` and reads it back with ``SequenceSpec(**d)``."""

    image_size: int
    segment_seconds: float
    frames_per_segment: int
    max_frames: int
    sample_rate: int
    n_mels: int
    mel_window_ms: float
    mel_hop_ms: float
    audio_window_seconds: float
    audio_hop_seconds: float
    audio_of_video: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> SequenceSpec:
        return cls(**settings.sequence_settings())

    def streams_for(self, modality: str) -> tuple[str, ...]:
        """The streams a clip of ``modality`` has under these settings."""
        if modality == "video":
            return ("video", "audio") if self.audio_of_video else ("video",)
        if modality == "audio":
            return ("audio",)
        raise MediaError(f"unknown modality {modality!r} (expected 'video' or 'audio')")


@dataclass(frozen=True)
class SegmentImages:
    """One stream of one segment: uint8 ``(n, S, S, 3)`` RGB images (``n`` may be 0 for the
    audio of a video without an audio track)."""

    segment: Segment
    stream: str
    images: npt.NDArray[np.uint8]


def iter_clip_images(
    uri: str,
    modality: str,
    spec: SequenceSpec,
    duration_seconds: float | None,
    streams: Collection[str] | None = None,
    limits: MediaLimits | None = None,
) -> Iterator[SegmentImages]:
    """Decode a clip into its image sequences, segment by segment and stream by stream.

    Args:
        uri: local path or object-store URI of the media file.
        modality: ``'video'`` or ``'audio'``.
        spec: sequence settings.
        duration_seconds: the probed duration (measured from the packets when unknown).
        streams: which of the clip's streams to produce (default: all it has).
        limits: per-file cost limits (segments per clip, decoding budgets); default ones if None.

    Yields:
        :class:`SegmentImages` segment by segment (every stream of segment ``i``, video before
        audio, then segment ``i + 1``), so a consumer that wants whole segments holds one at a
        time. Each stream has its own decoder, advanced in step with the others.

    Raises:
        MediaError: the clip (its video, or an audio file) cannot be decoded, or it is over a
            limit (:class:`~pipeline.errors.LimitError`).
    """
    from pipeline.media import decode as media

    limits = limits or MediaLimits()
    wanted = [s for s in spec.streams_for(modality) if streams is None or s in streams]
    duration = media.media_duration(uri, modality, duration_seconds, limits)
    limits.check_duration(duration, None)
    segments = media.plan_segments(duration, spec.segment_seconds)
    limits.check_segments(len(segments), spec.segment_seconds)
    per_stream: list[Iterator[SegmentImages]] = []
    if "video" in wanted:
        per_stream.append(_video_images(uri, segments, spec, limits))
    if "audio" in wanted:
        audio = _audio_images if modality == "audio" else _audio_of_video_images
        per_stream.append(audio(uri, segments, spec))
    # Each stream's iterator yields exactly one item per planned segment, in order.
    for items in zip(*per_stream, strict=True):
        yield from items


def _video_images(
    uri: str, segments: list[Segment], spec: SequenceSpec, limits: MediaLimits
) -> Iterator[SegmentImages]:
    from pipeline.media import decode as media

    n_frames = min(spec.frames_per_segment, spec.max_frames)
    for segment, frames in media.iter_video_segments(
        uri, segments, n_frames, spec.image_size, limits=limits
    ):
        yield SegmentImages(segment, "video", frames)


def _audio_images(uri: str, segments: list[Segment], spec: SequenceSpec) -> Iterator[SegmentImages]:
    from pipeline.media import decode as media
    from pipeline.media import spectrogram

    for segment, samples in media.iter_audio_segments(uri, segments, spec.sample_rate):
        if not np.all(np.isfinite(samples)):
            raise MediaError(f"{uri}: decoded audio contains NaN or infinite samples")
        images = spectrogram.log_mel_images(
            samples,
            sample_rate=spec.sample_rate,
            n_mels=spec.n_mels,
            mel_window_ms=spec.mel_window_ms,
            mel_hop_ms=spec.mel_hop_ms,
            window_seconds=spec.audio_window_seconds,
            hop_seconds=spec.audio_hop_seconds,
            max_windows=spec.max_frames,
            image_size=spec.image_size,
        )
        yield SegmentImages(segment, "audio", images)


def _audio_of_video_images(
    uri: str, segments: list[Segment], spec: SequenceSpec
) -> Iterator[SegmentImages]:
    """A video's audio track; a missing or broken track gives empty sequences, not an error
    (the video frames are the clip's main content)."""
    from pipeline.media import decode as media

    empty = np.zeros((0, spec.image_size, spec.image_size, 3), np.uint8)
    done = 0
    if media.has_audio_stream(uri):
        try:
            for item in _audio_images(uri, segments, spec):
                done += 1
                yield item
        except MediaError as exc:
            log.warning("audio track of %s unusable from segment %d: %s", uri, done, exc)
    for segment in segments[done:]:
        yield SegmentImages(segment, "audio", empty)
