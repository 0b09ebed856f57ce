"""Small media files for tests, written with PyAV and soundfile (never downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from pipeline.media.synthetic import write_audio, write_video


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


def small_corpus(root: Path) -> None:
    """Under ``root``: ``labelled/<class>/`` with 6 clips each of two order-only video classes
    (red->blue vs blue->red) and one audio class, and ``unlabelled/`` with one good clip and
    one corrupt upload (20 files, 19 decodable)."""
    for i in range(6):
        red, blue = (230 - 6 * i, 30, 30), (30, 30, 230 - 6 * i)  # every clip unique content
        colour_video(
            root / "labelled" / "red_then_blue" / f"rb{i}.mp4", [red, blue], frames_each=3 + i % 3
        )
        colour_video(
            root / "labelled" / "blue_then_red" / f"br{i}.mp4", [blue, red], frames_each=3 + i % 3
        )
        tone_file(
            root / "labelled" / "beep" / f"b{i}.wav", seconds=0.5 + 0.1 * i, freq=400 + 50 * i
        )
    tone_file(root / "unlabelled" / "mystery.flac", seconds=0.8, freq=500)
    corrupt_file(root / "unlabelled" / "broken.mp4")
