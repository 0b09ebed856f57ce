"""Benchmark 1: the extraction pipeline vs a bare ``model.predict`` on the same frames.

The pipeline decodes videos (640x360 H.264) and audio files, samples frames / builds spectrogram
windows in worker threads, runs VGG-16 in batches mixing clips, and writes Parquet + TFRecords.
The bare baseline gets the very same frames already decoded in memory and only runs
``encoder.predict``. Target: pipeline throughput >= 0.9 x bare throughput.

    .venv/bin/python bench/extraction_vs_bare.py [--image-size 224] [--videos 10] [--audios 4]
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
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--videos", type=int, default=10, help="10 s 640x360 clips")
    parser.add_argument("--audios", type=int, default=4, help="5 s audio clips")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from pipeline.config import load_settings
    from pipeline.features.cnn import FrameEmbedder, build_frame_encoder, use_precision
    from pipeline.media.sequences import SequenceSpec, iter_clip_images
    from pipeline.stages import run_extract, run_ingest
    from pipeline.tfenv import keras

    work = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    settings = load_settings(
        data_dir=str(work / "data"),
        cnn_weights="none",
        image_size=args.image_size,
        cnn_precision=args.precision,
    )
    source = work / "in"
    files = extraction_corpus(source, args.videos, args.audios)
    run_ingest(settings, str(source))

    header("pre-decoding the same frames for the bare baseline")
    from pipeline.media.probe import probe_media

    spec = SequenceSpec.from_settings(settings)
    frames = np.concatenate(
        [
            item.images
            for f in files
            for item in iter_clip_images(
                str(f), probe_media(str(f)).modality, spec, probe_media(str(f)).duration_seconds
            )
            if item.images.shape[0]
        ]
    )
    print(f"{frames.shape[0]} frames of {args.image_size}x{args.image_size}")

    use_precision(settings.resolved_precision())
    encoder = build_frame_encoder("none", args.image_size, seed=settings.seed)
    keras.config.set_dtype_policy("float32")
    encoder.predict(frames[:32], batch_size=32, verbose=0)  # warm up
    forward = FrameEmbedder(encoder, 32)  # the pipeline's own compiled forward pass, no I/O
    forward.embed_frames(frames[:32])

    bare, bare_forward, pipeline = [], [], []
    for repeat in range(args.repeats):
        with timer() as elapsed:
            encoder.predict(frames, batch_size=32, verbose=0)
        bare.append(frames.shape[0] / elapsed())
        with timer() as elapsed:
            forward.embed_frames(frames)
        bare_forward.append(frames.shape[0] / elapsed())
        shutil.rmtree(settings.features_root, ignore_errors=True)
        summary = run_extract(settings)
        assert summary.frames == frames.shape[0], (summary.frames, frames.shape[0])
        pipeline.append(summary.frames / summary.seconds)
        print(
            f"repeat {repeat + 1}: bare predict {bare[-1]:.2f}, bare forward {bare_forward[-1]:.2f}, "
            f"pipeline {pipeline[-1]:.2f} frames/s"
        )

    ratio = float(np.median(pipeline) / np.median(bare))
    ratio_forward = float(np.median(pipeline) / np.median(bare_forward))
    header("result")
    print(f"bare model.predict        : {np.median(bare):.2f} frames/s (median of {args.repeats})")
    print(f"bare compiled forward pass: {np.median(bare_forward):.2f} frames/s")
    print(f"extraction pipeline       : {np.median(pipeline):.2f} frames/s (decode + CNN + write)")
    print(f"ratio pipeline / bare model.predict = {ratio:.3f}   (target >= 0.9)")
    print(f"ratio pipeline / bare forward pass  = {ratio_forward:.3f}")
    save(
        "extraction_vs_bare",
        {
            "machine": machine(),
            "image_size": args.image_size,
            "precision": settings.resolved_precision(),
            "frames": int(frames.shape[0]),
            "clips": len(files),
            "bare_predict_fps": bare,
            "bare_forward_fps": bare_forward,
            "pipeline_fps": pipeline,
            "ratio": ratio,
            "ratio_vs_forward": ratio_forward,
            "target": ">= 0.9",
        },
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
