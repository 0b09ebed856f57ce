"""The real-data result: the Free Spoken Digit Dataset with its official split, through the
product (ingest from a manifest -> extract -> train), with random-init VGG-16 features.

Official split: recordings with file index 0-4 are the test set (500 clips); of the others,
index 5-9 are held out for validation (early stopping) and 10-49 train. Writes the manifest,
runs the stages with the given audio framing and image size, and copies the model's confusion
matrix and training curves to docs/.

    .venv/bin/python bench/fsdd.py [--image-size 64] [--window 0.24] [--hop 0.08] [--learning-rate 0.001]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from common import REPO, header, machine, save, shared_datasets


def dataset_folder() -> Path:
    """The FSDD recordings (the manifest names them where they are; ingest accepts paths
    inside its landing folder, so the runs point PIPELINE_LANDING_DIR at this folder)."""
    return shared_datasets() / "fsdd" / "recordings"


def write_manifest(folder: Path, train_indices: int = 40) -> Path:
    """A manifest of FSDD with its official split: file index 0-4 test, 5-9 validation, then
    ``train_indices`` indices (10, 11, ...) of training recordings per speaker and digit."""
    recordings = sorted(dataset_folder().glob("*.wav"))
    if len(recordings) != 3000:
        raise SystemExit(f"expected the 3,000 FSDD recordings, found {len(recordings)}")
    lines = ["path,label,split"]
    for path in recordings:
        digit, _speaker, index = path.stem.split("_")
        split = "test" if int(index) <= 4 else "val" if int(index) <= 9 else "train"
        if int(index) < 10 + train_indices:
            lines.append(f"{path},{digit},{split}")
    manifest = folder / "fsdd_official_split.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--window", type=float, default=0.24, help="audio window, seconds")
    parser.add_argument("--hop", type=float, default=0.08, help="audio hop, seconds")
    parser.add_argument("--n-mels", type=int, default=64)
    parser.add_argument("--max-frames", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=0.001)
    parser.add_argument("--data-dir", help="keep the run here (default: a temporary folder)")
    args = parser.parse_args()

    from pipeline.config import load_settings
    from pipeline.stages import run_extract, run_ingest, run_train
    from pipeline.training.params import TrainParams

    work = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="bench-fsdd-"))
    work.mkdir(parents=True, exist_ok=True)
    settings = load_settings(
        data_dir=str(work / "data"),
        landing_dir=str(dataset_folder()),
        cnn_weights="none",
        image_size=args.image_size,
        audio_window_seconds=args.window,
        audio_hop_seconds=args.hop,
        n_mels=args.n_mels,
        max_frames=args.max_frames,
    )
    manifest = write_manifest(work)
    started = time.perf_counter()
    ingest = run_ingest(settings, manifest=str(manifest))
    extract = run_extract(settings)
    extract_seconds = time.perf_counter() - started
    print(
        f"ingested {ingest.added + ingest.already_known} clips; {extract.frames} spectrogram windows through VGG-16 in {extract.seconds:.0f} s"
    )
    params = TrainParams(
        epochs=args.epochs, patience=args.patience, learning_rate=args.learning_rate
    )
    result = run_train(settings, params, promote=True)
    metrics = result.metrics
    header("result")
    print(
        f"test accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} on {metrics['examples']} clips"
    )
    print(
        f"validation macro-F1 {result.val_metrics.get('macro_f1', 0):.4f}; {result.epochs_run} epochs in {result.seconds:.0f} s"
    )
    print("confusion matrix (rows: true digit 0-9):")
    for row in metrics["confusion_matrix"]:
        print("  " + " ".join(f"{n:3d}" for n in row))
    docs = REPO / "docs"
    docs.mkdir(exist_ok=True)
    for name in ("confusion_matrix.png", "training_curves.png"):
        shutil.copy(Path(result.model_uri) / name, docs / f"fsdd_{name}")
    metadata = json.loads((Path(result.model_uri) / "metadata.json").read_text())
    save(
        "fsdd",
        {
            "machine": machine(),
            "settings": {
                k: getattr(settings, k)
                for k in (
                    "image_size",
                    "audio_window_seconds",
                    "audio_hop_seconds",
                    "n_mels",
                    "max_frames",
                    "mel_window_ms",
                    "mel_hop_ms",
                    "sample_rate",
                )
            },
            "params": metadata["params"],
            "clips": result.counts,
            "frames": extract.frames,
            "extract_seconds": extract_seconds,
            "train_seconds": result.seconds,
            "epochs_run": result.epochs_run,
            "test_accuracy": metrics["accuracy"],
            "test_macro_f1": metrics["macro_f1"],
            "val_macro_f1": result.val_metrics.get("macro_f1"),
            "per_class": metrics["per_class"],
            "confusion_matrix": metrics["confusion_matrix"],
        },
    )
    if not args.data_dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
