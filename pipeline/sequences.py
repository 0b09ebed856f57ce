"""Turn one clip into the image sequence the CNN sees.

* video: ``frames_per_clip`` frames sampled uniformly over the clip (capped at ``max_frames``);
* audio: log-mel spectrogram windows (see :mod:`pipeline.spectrogram`), at most ``max_frames``.

Sequences keep their true length; padding to a batch's longest sequence happens at training
and scoring time, where the model masks it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipeline.config import Settings
from pipeline.errors import MediaError


@dataclass(frozen=True)
class SequenceSpec:
    """The settings that shape a clip's image sequence."""

    image_size: int
    frames_per_clip: int
    max_frames: int
    sample_rate: int
    n_mels: int
    mel_window_ms: float
    mel_hop_ms: float
    audio_window_seconds: float
    audio_hop_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> SequenceSpec:
        return cls(
            image_size=settings.image_size,
            frames_per_clip=settings.frames_per_clip,
            max_frames=settings.max_frames,
            sample_rate=settings.sample_rate,
            n_mels=settings.n_mels,
            mel_window_ms=settings.mel_window_ms,
            mel_hop_ms=settings.mel_hop_ms,
            audio_window_seconds=settings.audio_window_seconds,
            audio_hop_seconds=settings.audio_hop_seconds,
        )


def clip_images(
    uri: str, modality: str, spec: SequenceSpec, duration_seconds: float | None = None
) -> npt.NDArray[np.uint8]:
    """Decode a clip into its image sequence.

    Args:
        uri: local path or object-store URI of the media file.
        modality: ``'video'`` or ``'audio'``.
        spec: sequence settings.
        duration_seconds: known duration from probing (saves a decoding pass for some videos).

    Returns:
        uint8 ``(n, image_size, image_size, 3)`` RGB images, ``1 <= n <= max_frames``.

    Raises:
        MediaError: the clip cannot be decoded.
    """
    from pipeline import media, spectrogram

    if modality == "video":
        n_frames = min(spec.frames_per_clip, spec.max_frames)
        return media.read_video_frames(uri, n_frames, spec.image_size, duration_seconds)
    if modality == "audio":
        seconds = spectrogram.audio_seconds_needed(
            spec.audio_window_seconds, spec.audio_hop_seconds, spec.max_frames
        )
        samples = media.read_audio(uri, spec.sample_rate, max_seconds=seconds)
        if not np.all(np.isfinite(samples)):
            raise MediaError(f"{uri}: decoded audio contains NaN or infinite samples")
        return spectrogram.log_mel_images(
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
    raise MediaError(f"{uri}: unknown modality {modality!r} (expected 'video' or 'audio')")
