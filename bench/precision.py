"""Benchmark 2: bfloat16 vs float32 feature extraction: time, feature similarity, accuracy.

1. Extraction time: the same corpus (640x360 videos + audio) through the whole extraction
   pipeline at 224 px with PIPELINE_CNN_PRECISION=float32 and =bfloat16 (Keras mixed_bfloat16).
   Target: bfloat16 time <= 0.6 x float32 time.
2. Feature similarity: cosine similarity per frame between the two runs' features (>= 0.99).
3. Accuracy: the FSDD digits (official file index split is not used; the pipeline's own 80/10/10
   split by clip id) extracted at --fsdd-image-size in both precisions, one head trained on each;
   test accuracies should be within 1 point.

    .venv/bin/python bench/precision.py [--image-size 224] [--fsdd-image-size 64] [--fsdd-per-digit 300]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
from common import REPO, extraction_corpus, header, machine, save


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
    parser.add_argument(
        "--fsdd-per-digit", type=int, default=300, help="recordings per digit (max 300)"
    )
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

    header(f"3. FSDD accuracy with each precision at {args.fsdd_image_size} px")
    fsdd = work / "fsdd"
    recordings = sorted((REPO.parent / "shared" / "datasets" / "fsdd" / "recordings").glob("*.wav"))
    if not recordings:
        recordings = sorted(Path("/work/shared/datasets/fsdd/recordings").glob("*.wav"))
    per_digit: dict[str, int] = {}
    for path in recordings:
        digit = path.name.split("_")[0]
        if per_digit.get(digit, 0) < args.fsdd_per_digit:
            (fsdd / digit).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, fsdd / digit / path.name)
            per_digit[digit] = per_digit.get(digit, 0) + 1
    accuracy = {}
    for precision in ("float32", "bfloat16"):
        settings = load_settings(
            data_dir=str(work / "fsdd-data"),
            cnn_weights="none",
            image_size=args.fsdd_image_size,
            cnn_precision=precision,
        )
        from pipeline.stages import run_extract, run_ingest

        run_ingest(settings, str(fsdd), labelled=True)
        run_extract(settings)
        result = run_train(settings, TrainParams(epochs=60, patience=10), promote=False)
        accuracy[precision] = result.metrics["accuracy"]
        print(
            f"{precision}: test accuracy {accuracy[precision]:.4f} on {result.metrics['examples']} clips"
        )
    gap = abs(accuracy["float32"] - accuracy["bfloat16"])
    print(f"accuracy gap = {100 * gap:.2f} points   (target <= 1)")

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
            "fsdd_image_size": args.fsdd_image_size,
            "fsdd_clips": sum(per_digit.values()),
            "fsdd_accuracy": accuracy,
            "accuracy_gap_points": 100 * gap,
        },
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
