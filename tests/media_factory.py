"""Small media files for tests, written with PyAV and soundfile (never downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from pipeline.synthetic import write_audio, write_video


def gray_ramp_video(
    path: Path, n_frames: int = 20, fps: int = 10, size: tuple[int, int] = (48, 64)
) -> Path:
    """Frame i is uniformly gray at level 10 * i (so a decoded frame tells its index)."""
    rows, cols = size
    frames = np.stack(
        [np.full((rows, cols, 3), min(255, 10 * i), np.uint8) for i in range(n_frames)]
    )
    codec = "mpeg4" if path.suffix == ".avi" else "libx264"
    return write_video(path, frames, fps, codec=codec)


def colour_video(
    path: Path, colours: list[tuple[int, int, int]], frames_each: int = 4, fps: int = 8
) -> Path:
    frames = np.concatenate(
        [np.tile(np.array(c, np.uint8), (frames_each, 48, 64, 1)) for c in colours]
    )
    return write_video(path, frames, fps)


def tone(seconds: float, freq: float, sample_rate: int = 16000) -> npt.NDArray[np.float32]:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def tone_file(
    path: Path, seconds: float = 1.0, freq: float = 440.0, sample_rate: int = 16000
) -> Path:
    return write_audio(path, tone(seconds, freq, sample_rate), sample_rate)


def corrupt_file(path: Path, size: int = 4096, seed: int = 0) -> Path:
    """Random bytes behind a plausible MP4 header: probing must reject it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    path.write_bytes(
        b"\x00\x00\x00\x18ftypmp42" + rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    )
    return path
