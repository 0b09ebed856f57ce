"""Whole-clip decoding for tests, built on the product's streaming decoders (real PyAV code
paths: :func:`iter_video_segments`, :func:`iter_audio_chunks`).

The pipeline itself always decodes segment by segment; these read a short test file at once
(or, :func:`clip_images`, its first segment's images).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pipeline.errors import MediaError
from pipeline.media.container import open_container
from pipeline.media.decode import (
    iter_audio_chunks,
    iter_video_segments,
    media_duration,
    plan_segments,
)
from pipeline.media.sequences import SequenceSpec, iter_clip_images


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


def read_audio(
    uri: str, sample_rate: int, max_seconds: float | None = None
) -> npt.NDArray[np.float32]:
    """Decode an audio track to mono float samples at ``sample_rate``, stopping at ``max_seconds``.

    Returns:
        float32 array ``(n_samples,)``, mono, nominally in [-1, 1].

    Raises:
        MediaError: no audio stream, or it does not decode.
    """
    limit = round(max_seconds * sample_rate) if max_seconds else None
    chunks: list[npt.NDArray[np.float32]] = []
    total = 0
    with open_container(uri) as container:
        for chunk in iter_audio_chunks(container, uri, sample_rate):
            chunks.append(chunk)
            total += chunk.size
            if limit is not None and total >= limit:
                break
    if not total:
        raise MediaError(f"{uri}: the audio stream holds no decodable samples")
    samples = np.concatenate(chunks)
    return samples[:limit] if limit is not None else samples


def audio_seconds_needed(window_seconds: float, hop_seconds: float, max_windows: int) -> float:
    """Seconds of audio that ``max_windows`` spectrogram windows cover."""
    return window_seconds + hop_seconds * (max_windows - 1) + 0.05


def clip_images(
    uri: str, modality: str, spec: SequenceSpec, duration_seconds: float | None = None
) -> npt.NDArray[np.uint8]:
    """The first segment's main stream (frames of a video, windows of an audio file): uint8
    ``(n, S, S, 3)``."""
    stream = "video" if modality == "video" else "audio"
    for item in iter_clip_images(uri, modality, spec, duration_seconds, streams=(stream,)):
        return item.images
    raise MediaError(f"{uri}: no {stream} sequence")
