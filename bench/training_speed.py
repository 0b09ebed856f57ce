"""Benchmark 7 (issue 4): training time to the same accuracy, cached-feature head vs the seed's
end-to-end frozen model, on the same clips and the same number of epochs.

Both models train on FSDD spoken digits (official split: index 0-4 test, 5-9 validation, and
--train-indices training recordings per speaker and digit) at --image-size, with the FSDD
framing (0.24 s windows every 0.08 s). The head's cost includes the one-off VGG-16 pass that
caches the features (`stpipe extract`); the end-to-end model decodes and runs VGG-16 on every
window in every epoch. Reports the epoch times, the validation accuracy per epoch, the time
each needs to reach --target validation accuracy, and the ratios.

    .venv/bin/python bench/training_speed.py [--image-size 64] [--train-indices 10] [--epochs 10]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import header, machine, save


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument(
        "--train-indices", type=int, default=10, help="training recordings per speaker and digit"
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--target", type=float, default=0.8, help="validation accuracy to reach")
    args = parser.parse_args()

    from fsdd import write_manifest

    from pipeline.config import load_settings
    from pipeline.stages import run_extract, run_ingest, run_train
    from pipeline.training.params import TrainParams

    work = Path(tempfile.mkdtemp(prefix="bench-training-"))
    settings = load_settings(
        data_dir=str(work / "data"),
        cnn_weights="none",
        image_size=args.image_size,
        audio_window_seconds=0.24,
        audio_hop_seconds=0.08,
        max_frames=24,
    )
    run_ingest(settings, manifest=str(write_manifest(work, args.train_indices)))
    started = time.perf_counter()
    extract = run_extract(settings)
    extract_seconds = time.perf_counter() - started
    print(f"feature extraction (once): {extract_seconds:.1f} s for {extract.frames} frames")

    results = {}
    for kind, end_to_end in (("head", False), ("end_to_end", True)):
        params = TrainParams(
            epochs=args.epochs, patience=1000, learning_rate=0.001, end_to_end=end_to_end
        )
        started = time.perf_counter()
        result = run_train(settings, params, promote=False)
        seconds = time.perf_counter() - started
        metadata = json.loads((Path(result.model_uri) / "metadata.json").read_text())
        val_accuracy = metadata["history"].get("val_categorical_accuracy", [])
        reached = next((i + 1 for i, a in enumerate(val_accuracy) if a >= args.target), None)
        # median: the first epoch also traces the graph
        epoch_seconds = float(np.median(metadata["history"]["epoch_seconds"]))
        results[kind] = {
            "seconds": seconds,
            "epoch_seconds": epoch_seconds,
            "val_accuracy": val_accuracy,
            "test_accuracy": result.metrics["accuracy"],
            "epochs_to_target": reached,
        }
        header(kind)
        print(
            f"{args.epochs} epochs: {epoch_seconds:.2f} s per epoch; {seconds:.1f} s with evaluation"
        )
        print(f"validation accuracy per epoch: {[round(a, 3) for a in val_accuracy]}")
        print(
            f"test accuracy: {result.metrics['accuracy']:.3f}; epochs to {args.target}: {reached}"
        )

    head, e2e = results["head"], results["end_to_end"]

    def time_to_target(r: dict, overhead: float) -> float | None:
        return (
            None
            if r["epochs_to_target"] is None
            else overhead + r["epoch_seconds"] * r["epochs_to_target"]
        )

    head_time = time_to_target(head, extract_seconds)
    e2e_time = time_to_target(e2e, 0.0)
    header("result")
    print(f"epoch time end-to-end / head = {e2e['epoch_seconds'] / head['epoch_seconds']:.0f}x")
    if head_time and e2e_time:
        print(
            f"time to {args.target} val accuracy: head {head_time:.1f} s (extraction included), end-to-end {e2e_time:.1f} s -> {e2e_time / head_time:.1f}x"
        )
    save(
        "training_speed",
        {
            "machine": machine(),
            "image_size": args.image_size,
            "clips": extract.extracted,
            "frames": extract.frames,
            "extract_seconds": extract_seconds,
            "epochs": args.epochs,
            **results,
            "epoch_ratio": e2e["epoch_seconds"] / head["epoch_seconds"],
            "time_to_target": {"head": head_time, "end_to_end": e2e_time, "target": args.target},
        },
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
