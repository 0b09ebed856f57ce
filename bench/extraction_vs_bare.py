"""Benchmark 1: the extraction pipeline vs the bare forward pass on the same frames.

For each corpus (synthetic videos: 640x360 H.264; a real camera video; audio: WAV) and each precision, the pipeline decodes
the files, samples frames / builds spectrogram windows in worker threads, runs VGG-16 in
batches mixing clips, and writes Parquet + TFRecords. The baseline gets the very same frames
already decoded in memory and only runs the pipeline's own compiled forward pass (same batch
size, same thread settings), and also Keras ``model.predict``. Runs are interleaved (bare,
pipeline, bare, pipeline, ...) so that machine noise hits both alike.
Target: pipeline >= 0.95 x bare forward pass, for video and for audio, in both precisions.

``--profile DIR`` samples the first pipeline run of each case with py-spy (all threads) and
writes the collapsed stacks (``.raw``, for any flame-graph tool) and the functions with the
most samples of their own, with each thread's share (``.txt``).

    .venv/bin/python bench/extraction_vs_bare.py [--image-size 224] [--videos 16] [--audios 8]
        [--precisions float32,bfloat16] [--modalities video,audio] [--profile DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from common import extraction_corpus, header, machine, real_video_corpus, save, timer


class Profiler:
    """py-spy sampling this very process (every thread, Python frames only) until stopped."""

    def __init__(self, out: Path) -> None:
        self.raw = out.with_suffix(".raw")
        py_spy = shutil.which("py-spy") or str(Path(os.sys.executable).with_name("py-spy"))
        self.process = subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(os.getpid()),
                "--rate",
                "50",
                "--threads",
                "--format",
                "raw",
                "--output",
                str(self.raw),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> str:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=60)
        return summarize_profile(self.raw)


def summarize_profile(raw: Path, top: int = 14) -> str:
    """Share of samples per thread, and per leaf function (own time), from py-spy raw stacks.

    py-spy sees Python frames: TensorFlow's own threads are not Python threads, and time the
    main thread spends waiting for them shows as the frame that called TensorFlow."""
    own: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        total += count
        threads[frames[0].split(": ", 1)[-1] if frames else "?"] += count
        own[frames[-1]] += count
    lines = [
        f"{total} samples; by thread: "
        + ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in threads.most_common(6))
    ]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    text = "\n".join(lines)
    raw.with_suffix(".txt").write_text(text + "\n")
    return text


def decoded_frames(files: list[Path], settings) -> np.ndarray:  # type: ignore[no-untyped-def]
    from pipeline.media.probe import probe_media
    from pipeline.media.sequences import SequenceSpec, iter_clip_images

    spec = SequenceSpec.from_settings(settings)
    chunks = []
    for f in files:
        probe = probe_media(str(f))
        for item in iter_clip_images(str(f), probe.modality, spec, probe.duration_seconds):
            if item.images.shape[0]:
                chunks.append(item.images)
    return np.concatenate(chunks)


def measure(modality: str, precision: str, files: list[Path], work: Path, args) -> dict:  # type: ignore[no-untyped-def]
    from pipeline.config import load_settings
    from pipeline.features.cnn import build_embedder
    from pipeline.stages import run_extract, run_ingest

    settings = load_settings(
        data_dir=str(work / "data"),
        cnn_weights="none",
        image_size=args.image_size,
        cnn_precision=precision,
    )
    run_ingest(settings, str(files[0].parent))
    decoded_frames(files[:1], settings)  # first calls (librosa's filter banks, codecs) warm up
    cpu_started = time.process_time()
    frames = decoded_frames(files, settings)
    decode_cpu = time.process_time() - cpu_started  # one thread: its CPU time is its cost
    header(
        f"{modality}, {precision}: {len(files)} clips, {frames.shape[0]} frames of "
        f"{args.image_size}x{args.image_size}"
    )
    forward = build_embedder(
        "none", args.image_size, precision, settings.cnn_batch_size, settings.seed
    )
    forward.embed_frames(frames[: forward.batch_size])  # trace and warm up
    predict_fps = []
    if args.predict:
        forward.encoder.predict(frames[:32], batch_size=settings.cnn_batch_size, verbose=0)
        with timer() as elapsed:
            forward.encoder.predict(frames, batch_size=settings.cnn_batch_size, verbose=0)
        predict_fps.append(frames.shape[0] / elapsed())
    profile = None
    if args.profile:  # an extra run: the sampler takes CPU, so its timing is not counted
        args.profile.mkdir(parents=True, exist_ok=True)
        profiler = Profiler(args.profile / f"extraction-{modality}-{precision}")
        run_extract(settings)
        profile = profiler.stop()
    bare, pipeline, setup = [], [], []
    cnn_cpu, pipeline_cpu, pipeline_decode_cpu = [], [], []
    for repeat in range(args.repeats):
        cpu_started = time.process_time()
        with timer() as elapsed:
            forward.embed_frames(frames)
        cnn_cpu.append(time.process_time() - cpu_started)
        bare.append(frames.shape[0] / elapsed())
        shutil.rmtree(settings.features_root, ignore_errors=True)
        cpu_started = time.process_time()
        summary = run_extract(settings)
        pipeline_cpu.append(time.process_time() - cpu_started)
        pipeline_decode_cpu.append(summary.decode_cpu_seconds)
        assert summary.frames == frames.shape[0], (summary.frames, frames.shape[0])
        setup.append(summary.setup_seconds)
        pipeline.append(summary.frames / summary.seconds)
        print(
            f"repeat {repeat + 1}: bare forward {bare[-1]:.2f}, pipeline {pipeline[-1]:.2f} "
            f"frames/s (and {setup[-1]:.1f} s building VGG-16, not counted)",
            flush=True,
        )
    if profile:
        print(f"profile of the first pipeline run ({args.profile}):\n{profile}")
    ratio = float(np.median(pipeline) / np.median(bare))
    # With the CNN keeping every core busy, decoding can only take CPU from it: even perfectly
    # overlapped, the pipeline reaches at most CNN CPU time / (CNN + decoding CPU time).
    ceiling = float(np.median(cnn_cpu) / (np.median(cnn_cpu) + decode_cpu))
    print(
        f"{modality} {precision}: pipeline / bare forward = {ratio:.3f}   (target >= 0.95); "
        f"CNN {np.median(cnn_cpu):.1f} CPU-s, decoding {decode_cpu:.1f} CPU-s alone "
        f"({np.median(pipeline_decode_cpu):.1f} in the pipeline): ceiling {ceiling:.3f}"
    )
    return {
        "clips": len(files),
        "frames": int(frames.shape[0]),
        "batch_size": settings.cnn_batch_size,
        "bare_forward_fps": bare,
        "bare_predict_fps": predict_fps,
        "pipeline_fps": pipeline,
        "pipeline_setup_seconds": setup,
        "cnn_cpu_seconds": cnn_cpu,
        "decode_cpu_seconds": decode_cpu,
        "pipeline_cpu_seconds": pipeline_cpu,  # the whole run, set-up included
        "pipeline_decode_cpu_seconds": pipeline_decode_cpu,
        "ratio": ratio,
        "ceiling": ceiling,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument(
        "--modalities",
        default="video,real-video,audio",
        help="video: synthetic 640x360 scenes (noise: 6 Mbit/s, dear to decode); real-video: "
        "copies of a real camera clip (H.264 High, B-frames, 0.4 Mbit/s); audio: WAV tones",
    )
    parser.add_argument("--videos", type=int, default=16, help="10 s 640x360 clips, 16 frames each")
    parser.add_argument("--audios", type=int, default=8, help="5 s audio clips, ~30 windows each")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--predict", action="store_true", help="also time keras model.predict")
    parser.add_argument("--profile", type=Path, help="write py-spy profiles into this folder")
    args = parser.parse_args()

    from pipeline.hardware import cpu_features

    results: dict[str, dict] = {}
    work = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    try:
        for modality in args.modalities.split(","):
            source = work / modality
            if modality == "real-video":
                files = real_video_corpus(source, args.videos)
            else:
                counts = (args.videos, 0) if modality == "video" else (0, args.audios)
                files = extraction_corpus(source, *counts)
            for precision in args.precisions.split(","):
                results[f"{modality} {precision}"] = measure(
                    modality, precision, files, work / modality, args
                )
                shutil.rmtree(work / modality / "data", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    header("result (frames/s, median)")
    print(f"{'case':<20} {'bare forward':>12} {'pipeline':>9} {'ratio':>6} {'ceiling':>8}")
    for case, r in results.items():
        print(
            f"{case:<20} {np.median(r['bare_forward_fps']):>12.2f} "
            f"{np.median(r['pipeline_fps']):>9.2f} {r['ratio']:>6.3f} {r['ceiling']:>8.3f}"
        )
    save(
        "extraction_vs_bare",
        {
            "machine": machine(),
            "isa": cpu_features().isa,
            "image_size": args.image_size,
            "cases": results,
            "target": "pipeline / bare forward >= 0.95",
            "profiles": str(args.profile) if args.profile else None,
        },
    )


if __name__ == "__main__":
    main()
