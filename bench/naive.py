"""Benchmark 5: naive per-clip, per-frame extraction vs the pipeline.

The naive way many tutorials show: for each clip, decode it, then call ``model.predict`` on one
frame at a time. The pipeline: threads decode while VGG-16 runs 32-frame batches mixing clips.
Same clips, same frames, same model; the ratio is reported.

    .venv/bin/python bench/naive.py [--image-size 224] [--videos 4]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
from common import extraction_corpus, header, machine, save, timer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--videos", type=int, default=4)
    args = parser.parse_args()

    from pipeline.config import load_settings
    from pipeline.features.cnn import build_frame_encoder
    from pipeline.media.probe import probe_media
    from pipeline.media.sequences import SequenceSpec, iter_clip_images
    from pipeline.stages import run_extract, run_ingest

    work = Path(tempfile.mkdtemp(prefix="bench-naive-"))
    source = work / "in"
    videos = extraction_corpus(source, args.videos, audios=0)
    settings = load_settings(
        data_dir=str(work / "data"),
        cnn_weights="none",
        image_size=args.image_size,
        audio_of_video=False,
    )
    spec = SequenceSpec.from_settings(settings)
    encoder = build_frame_encoder("none", args.image_size, seed=settings.seed)
    encoder.predict(np.zeros((1, args.image_size, args.image_size, 3), np.uint8), verbose=0)

    header("naive: per clip, decode, then one predict call per frame")
    frames = 0
    with timer() as naive_elapsed:
        for video in videos:
            info = probe_media(str(video))
            for item in iter_clip_images(str(video), "video", spec, info.duration_seconds):
                for frame in item.images:
                    encoder.predict(frame[np.newaxis], verbose=0)
                    frames += 1
    naive_fps = frames / naive_elapsed()
    print(f"{frames} frames in {naive_elapsed():.1f} s: {naive_fps:.2f} frames/s")

    header("pipeline: decode threads + batched CNN + store")
    run_ingest(settings, str(source))
    summary = run_extract(settings)
    pipeline_fps = summary.frames / summary.seconds
    print(f"{summary.frames} frames in {summary.seconds:.1f} s: {pipeline_fps:.2f} frames/s")
    speedup = pipeline_fps / naive_fps
    header("result")
    print(f"pipeline / naive throughput = {speedup:.2f}x")
    save(
        "naive",
        {
            "machine": machine(),
            "image_size": args.image_size,
            "frames": frames,
            "naive_fps": naive_fps,
            "pipeline_fps": pipeline_fps,
            "speedup": speedup,
        },
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
