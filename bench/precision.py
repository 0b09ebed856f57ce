"""Benchmark 2: bfloat16 vs float32 feature extraction: time, feature similarity, accuracy.

1. Extraction time: the same corpus (640x360 videos + audio) through the whole extraction
   pipeline at 224 px with PIPELINE_CNN_PRECISION=float32 and =bfloat16 (Keras mixed_bfloat16).
   Target: bfloat16 time <= 0.6 x float32 time.
2. Feature similarity: cosine similarity per frame between the two runs' features (>= 0.99).
3. Accuracy: the FSDD digits with the official split (bench/fsdd.py's manifest and audio
   settings) extracted at --fsdd-image-size in both precisions, --seeds heads trained on each
   (the same seeds); bfloat16's mean test accuracy must lose at most 1 point against float32's,
   and the per-frame cosine stay >= 0.999 (300 test clips: one clip is 0.33 points, and one
   head's accuracy varies with its seed by more than that).
   These two decide the default precision: ``auto`` (bfloat16 where the hardware has it) if
   both hold, float32 otherwise.

    .venv/bin/python bench/precision.py [--image-size 224] [--fsdd-image-size 64]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
from common import extraction_corpus, header, machine, save


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if not a.shape[0]:
        return np.empty(0)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def extract(settings, source: Path) -> tuple[float, dict]:  # type: ignore[no-untyped-def]
    from pipeline.features.store import FeatureStore
    from pipeline.stages import run_extract, run_ingest

    run_ingest(settings, str(source), labelled=True)
    shutil.rmtree(FeatureStore.from_settings(settings).folder, ignore_errors=True)
    summary = run_extract(settings)
    return summary.seconds, FeatureStore.from_settings(settings).read_segments()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--audios", type=int, default=2)
    parser.add_argument("--fsdd-image-size", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=3, help="heads trained per precision")
    args = parser.parse_args()

    from pipeline.config import load_settings
    from pipeline.stages import run_train
    from pipeline.training.params import TrainParams

    work = Path(tempfile.mkdtemp(prefix="bench-precision-"))
    source = work / "corpus" / "unlabelled"
    extraction_corpus(source, args.videos, args.audios)

    header(f"1-2. extraction time and feature similarity at {args.image_size} px")
    seconds, features = {}, {}
    for precision in ("float32", "bfloat16", "float32", "bfloat16"):  # interleaved: fair to noise
        settings = load_settings(
            data_dir=str(work / "data"),
            cnn_weights="none",
            image_size=args.image_size,
            cnn_precision=precision,
        )
        took, rows = extract(settings, work / "corpus")
        seconds.setdefault(precision, []).append(took)
        features[precision] = rows
        print(f"{precision}: {took:.1f} s")
    time_ratio = float(np.median(seconds["bfloat16"]) / np.median(seconds["float32"]))
    cosines = []
    for clip_id, rows in features["float32"].items():
        for full, half in zip(rows, features["bfloat16"][clip_id], strict=True):
            for stream in ("video", "audio"):
                a, b = full.stream(stream), half.stream(stream)
                if a.shape[0]:
                    cosines.extend(
                        np.sum(a * b, axis=1)
                        / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
                    )
    cosines_arr = np.array(cosines)
    print(f"time bfloat16 / float32 = {time_ratio:.3f}   (target <= 0.6)")
    print(
        f"cosine similarity per frame: min {cosines_arr.min():.4f}, mean {cosines_arr.mean():.5f}   (target >= 0.99)"
    )

    header(f"3. FSDD, official split, at {args.fsdd_image_size} px: accuracy with each precision")
    from fsdd import dataset_folder, write_manifest

    from pipeline.features.store import FeatureStore
    from pipeline.stages import run_extract, run_ingest

    fsdd_work = work / "fsdd"
    fsdd_work.mkdir()
    manifest = write_manifest(fsdd_work)
    accuracy, per_seed, fsdd_features, fsdd_clips = {}, {}, {}, 0
    for precision in ("float32", "bfloat16"):
        settings = load_settings(
            data_dir=str(fsdd_work / "data"),
            landing_dir=str(dataset_folder()),
            cnn_weights="none",
            cnn_precision=precision,
            image_size=args.fsdd_image_size,
            audio_window_seconds=0.24,  # the settings of bench/fsdd.py
            audio_hop_seconds=0.08,
            max_frames=24,
        )
        run_ingest(settings, manifest=str(manifest))
        extracted = run_extract(settings)
        fsdd_features[precision] = FeatureStore.from_settings(settings).read_segments()
        per_seed[precision] = []
        for seed in range(settings.seed, settings.seed + args.seeds):
            result = run_train(
                settings,
                TrainParams(epochs=80, patience=10, learning_rate=0.001, seed=seed),
                promote=False,
            )
            per_seed[precision].append(result.metrics["accuracy"])
            fsdd_clips = result.metrics["examples"]
        accuracy[precision] = float(np.mean(per_seed[precision]))
        print(
            f"{precision}: {extracted.frames} windows in {extracted.seconds:.0f} s; test accuracy "
            f"{accuracy[precision]:.4f} on {fsdd_clips} clips, mean of {args.seeds} seeds "
            f"({', '.join(f'{a:.4f}' for a in per_seed[precision])})"
        )
    fsdd_cosines = np.array(
        [
            c
            for clip_id, rows in fsdd_features["float32"].items()
            for full, half in zip(rows, fsdd_features["bfloat16"][clip_id], strict=True)
            for c in _cosines(full.stream("audio"), half.stream("audio"))
        ]
    )
    # The criterion guards against bfloat16 costing accuracy: what it loses, if anything.
    loss = accuracy["float32"] - accuracy["bfloat16"]
    gap = abs(loss)
    print(
        f"bfloat16 accuracy - float32 = {-100 * loss:+.2f} points (target: loses at most 1); "
        f"a test clip is {100 / fsdd_clips:.2f} points"
    )
    print(
        f"FSDD per-window cosine: min {fsdd_cosines.min():.5f}, mean {fsdd_cosines.mean():.6f}"
        "   (target >= 0.999)"
    )
    cosine_min = float(min(cosines_arr.min(), fsdd_cosines.min()))
    decision = "auto" if 100 * loss <= 1.0 and cosine_min >= 0.999 else "float32"
    print(f"default precision decided from these: {decision}")

    save(
        "precision",
        {
            "machine": machine(),
            "image_size": args.image_size,
            "seconds": seconds,
            "time_ratio": time_ratio,
            "target_time_ratio": "<= 0.6",
            "cosine_min": float(cosines_arr.min()),
            "cosine_mean": float(cosines_arr.mean()),
            "frames_compared": int(cosines_arr.size),
            "fsdd_split": "official (file index 0-4 test, 5-9 validation, 10-49 train)",
            "fsdd_image_size": args.fsdd_image_size,
            "fsdd_test_clips": fsdd_clips,
            "fsdd_accuracy": accuracy,
            "fsdd_seeds": args.seeds,
            "fsdd_accuracy_per_seed": per_seed,
            "accuracy_gap_points": 100 * gap,
            "bfloat16_accuracy_loss_points": 100 * loss,
            "fsdd_cosine_min": float(fsdd_cosines.min()),
            "fsdd_cosine_mean": float(fsdd_cosines.mean()),
            "default_decided": decision,
        },
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
