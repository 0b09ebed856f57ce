"""Synthetic media for the demo and the tests, written with PyAV and soundfile.

The demo corpus has four classes whose clips differ only in temporal order, so only a model that
reads the sequence can separate them:

* ``colours_forward`` / ``colours_reverse``: videos showing the same colours (red, green, blue,
  yellow), one after another, in one order or the reverse;
* ``tones_rising`` / ``tones_falling``: audio of the same steady notes, rising or falling.

Every clip gets random durations, sizes, frame rates, brightness, pitch and noise, from a seeded
generator, so the corpus is identical on every run (re-running the demo ingests nothing new).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

DEMO_COLOURS: tuple[tuple[int, int, int], ...] = (
    (220, 40, 40),  # red
    (40, 200, 60),  # green
    (50, 70, 230),  # blue
    (230, 210, 40),  # yellow
)
DEMO_NOTE_RATIOS = (1.0, 1.25, 1.5, 2.0)  # a major arpeggio: same notes, either direction


def write_video(
    path: Path,
    frames: Iterable[npt.NDArray[np.uint8]],
    fps: int,
    *,
    codec: str = "libx264",
    options: dict[str, str] | None = None,
    audio: tuple[npt.NDArray[np.float32], int] | None = None,
) -> Path:
    """Encode frames (uint8 ``(rows, cols, 3)`` RGB each, even rows/cols; an array or any
    iterable, so long videos need not fit in memory) as a video file, with an optional AAC
    audio track ``(mono float samples, sample rate)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        video: Any = None
        for image in frames:
            if video is None:
                video = container.add_stream(codec, rate=fps)
                video.height, video.width = image.shape[:2]
                video.pix_fmt = "yuv420p"
                defaults = {"preset": "ultrafast", "crf": "18"} if codec == "libx264" else {}
                video.options = {**defaults, **(options or {})}
                # every stream must exist before the first packet is written
                sound = container.add_stream("aac", rate=audio[1], layout="mono") if audio else None
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        if video is None:
            raise ValueError("write_video needs at least one frame")
        if audio is not None and sound is not None:
            samples, rate = audio
            for start in range(0, samples.size, 1024):
                chunk = samples[np.newaxis, start : start + 1024].astype(np.float32)
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                frame.sample_rate = rate
                for packet in sound.encode(frame):
                    container.mux(packet)
        for stream in (video, sound):
            if stream is not None:
                for packet in stream.encode():
                    container.mux(packet)
    return path


def write_audio(path: Path, samples: npt.NDArray[np.float32], sample_rate: int) -> Path:
    """Write mono float samples in [-1, 1]; the format follows the suffix.

    wav/flac/ogg go through soundfile (libsndfile); mp3/m4a through PyAV (LAME / AAC).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in (".wav", ".flac", ".ogg"):
        import soundfile

        subtype = {".wav": "PCM_16", ".flac": "PCM_16", ".ogg": "VORBIS"}[suffix]
        soundfile.write(str(path), samples, sample_rate, subtype=subtype)
        return path
    codec = {".mp3": "libmp3lame", ".m4a": "aac"}[suffix]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=sample_rate, layout="mono")
        frame_size = 1152 if codec == "libmp3lame" else 1024
        stream_format = "fltp"
        for start in range(0, samples.size, frame_size):
            chunk = samples[start : start + frame_size].astype(np.float32)
            frame = av.AudioFrame.from_ndarray(
                chunk[np.newaxis, :], format=stream_format, layout="mono"
            )
            frame.sample_rate = sample_rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def colour_sequence_frames(
    colours: Sequence[tuple[int, int, int]],
    segment_frames: Sequence[int],
    rows: int,
    cols: int,
    rng: np.random.Generator,
    noise: float = 12.0,
) -> npt.NDArray[np.uint8]:
    """Frames showing each colour for its number of frames, with per-pixel noise and a moving
    bright square (so frames are not flat)."""
    frames = []
    for colour, count in zip(colours, segment_frames, strict=True):
        for i in range(count):
            image = np.empty((rows, cols, 3), np.float32)
            image[:] = colour
            image += rng.normal(0.0, noise, size=image.shape)
            side = max(4, rows // 4)
            top = (i * 3) % max(1, rows - side)
            left = (i * 5) % max(1, cols - side)
            image[top : top + side, left : left + side] += 35.0
            frames.append(np.clip(image, 0, 255).astype(np.uint8))
    return np.stack(frames)


def tone_sequence(
    frequencies: Sequence[float],
    note_seconds: Sequence[float],
    sample_rate: int,
    rng: np.random.Generator,
    noise: float = 0.01,
) -> npt.NDArray[np.float32]:
    """Steady sine notes one after another (10 ms fades), plus white noise; peak about 0.6."""
    parts = []
    for freq, seconds in zip(frequencies, note_seconds, strict=True):
        t = np.arange(int(seconds * sample_rate)) / sample_rate
        note = 0.5 * np.sin(2 * np.pi * freq * t) + 0.1 * np.sin(4 * np.pi * freq * t)
        fade = min(len(t) // 2, int(0.01 * sample_rate))
        if fade:
            ramp = np.linspace(0.0, 1.0, fade)
            note[:fade] *= ramp
            note[-fade:] *= ramp[::-1]
        parts.append(note)
    samples = np.concatenate(parts) + rng.normal(0.0, noise, size=sum(len(p) for p in parts))
    result: npt.NDArray[np.float32] = samples.astype(np.float32)
    return result


@dataclass(frozen=True)
class DemoCorpus:
    root: Path
    labelled: int
    unlabelled: int
    corrupt: int


def generate_demo_corpus(
    landing: Path, *, clips_per_class: int = 40, unlabelled_per_class: int = 3, seed: int = 0
) -> DemoCorpus:
    """Write the demo corpus into a landing folder (``labelled/<class>/...`` and ``unlabelled/``).

    Files that already exist are left alone, so a re-run writes nothing.
    """
    rng = np.random.default_rng(seed)
    labelled = unlabelled = 0
    video_formats = (
        (".mp4", "libx264"),
        (".mp4", "libx264"),
        (".mkv", "libx264"),
        (".avi", "mpeg4"),
    )
    audio_formats = (".wav", ".flac", ".ogg", ".wav")
    for index in range(clips_per_class + unlabelled_per_class):
        is_labelled = index < clips_per_class
        for direction in ("forward", "reverse"):
            clip_rng = np.random.default_rng(rng.integers(1 << 63))
            colours = list(DEMO_COLOURS) if direction == "forward" else list(DEMO_COLOURS)[::-1]
            fps = int(clip_rng.integers(8, 16))
            segment_frames = [
                int(clip_rng.integers(int(0.4 * fps), int(0.8 * fps) + 1)) for _ in colours
            ]
            rows, cols = (
                int(v) for v in clip_rng.choice([(48, 64), (64, 64), (72, 96), (96, 128)])
            )
            jitter = clip_rng.uniform(0.75, 1.15)
            jittered = [tuple(int(min(255, c * jitter)) for c in colour) for colour in colours]
            frames = colour_sequence_frames(jittered, segment_frames, rows, cols, clip_rng)  # type: ignore[arg-type]
            suffix, codec = video_formats[index % len(video_formats)]
            folder = f"labelled/colours_{direction}" if is_labelled else "unlabelled"
            path = landing / folder / f"colours_{direction}_{index:03d}{suffix}"
            if not path.exists():
                write_video(path, frames, fps, codec=codec)
            labelled += is_labelled
            unlabelled += not is_labelled
        for direction in ("rising", "falling"):
            clip_rng = np.random.default_rng(rng.integers(1 << 63))
            base = clip_rng.uniform(250.0, 500.0)
            freqs = [base * r for r in DEMO_NOTE_RATIOS]
            if direction == "falling":
                freqs = freqs[::-1]
            notes = [float(clip_rng.uniform(0.35, 0.6)) for _ in freqs]
            sample_rate = int(clip_rng.choice([16000, 22050, 44100]))
            samples = tone_sequence(
                freqs, notes, sample_rate, clip_rng, noise=clip_rng.uniform(0.002, 0.02)
            )
            suffix = audio_formats[index % len(audio_formats)]
            folder = f"labelled/tones_{direction}" if is_labelled else "unlabelled"
            path = landing / folder / f"tones_{direction}_{index:03d}{suffix}"
            if not path.exists():
                write_audio(path, samples, sample_rate)
            labelled += is_labelled
            unlabelled += not is_labelled
    corrupt = landing / "unlabelled" / "truncated_upload.mp4"
    if not corrupt.exists():
        corrupt.parent.mkdir(parents=True, exist_ok=True)
        corrupt.write_bytes(
            b"\x00\x00\x00\x18ftypmp42" + bytes(rng.integers(0, 256, 2048, dtype=np.uint8))
        )
    return DemoCorpus(landing, labelled, unlabelled, 1)
