"""What a version folder shows about its evaluation: the confusion-matrix and training-curve
plots and the model card (the metrics themselves: :mod:`pipeline.model.metrics`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str, title: str
) -> None:
    """Write a confusion-matrix heat map (rows: true class, columns: predicted) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(matrix)
    size = max(4.0, 0.6 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(class_names)), labels=class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), labels=class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    peak = counts.max() if counts.size else 0
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(
                j,
                i,
                str(counts[i, j]),
                ha="center",
                va="center",
                color="white" if counts[i, j] > peak / 2 else "black",
                fontsize=8,
            )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training_curves(history: dict[str, list[float]], path: str, title: str) -> None:
    """Loss and accuracy per epoch, train and validation, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, ax in (("loss", loss_ax), ("categorical_accuracy", acc_ax)):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + key)
            if values:
                ax.plot(
                    range(1, len(values) + 1), values, style, label=(prefix or "train_").rstrip("_")
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel(key.replace("categorical_", ""))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def model_card(metadata: dict[str, Any]) -> str:
    """A short Markdown model card from a model version's metadata."""
    metrics = metadata.get("metrics", {})
    val = metadata.get("val_metrics", {})
    counts = metadata.get("counts", {})
    params = metadata.get("params", {})
    lines = [
        f"# Model {metadata['model_version']}",
        "",
        f"- kind: {metadata.get('kind')} reading {', '.join(metadata.get('streams', []))}",
        f"- classes: {', '.join(metadata.get('class_names', []))}",
        f"- feature settings hash: `{metadata.get('settings_hash')}`",
        f"- training fingerprint: `{str(metadata.get('fingerprint'))[:16]}`",
        f"- seed: {params.get('seed')}; epochs run: {metadata.get('epochs_run')}"
        f" (resumed: {metadata.get('resumed_from_epoch') is not None})",
        f"- parameters: {', '.join(f'{k}={v}' for k, v in sorted(params.items()))}",
        "",
        "## Data",
        "",
        "| split | clips | segments |",
        "|---|---|---|",
    ]
    for split in ("train", "val", "test"):
        lines.append(
            f"| {split} | {counts.get(split, 0)} | {metadata.get('examples', {}).get(split, 0)} |"
        )
    lines += [
        "",
        f"## Metrics ({metrics.get('evaluated_on', 'test')} split, clip level)",
        "",
        f"- accuracy: {_fmt(metrics.get('accuracy'))}",
        f"- macro-F1: {_fmt(metrics.get('macro_f1'))}",
        f"- validation macro-F1: {_fmt(val.get('macro_f1'))}",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for name, row in metrics.get("per_class", {}).items():
        scores = " | ".join(f"{row[k]:.3f}" for k in ("precision", "recall", "f1"))
        lines.append(f"| {name} | {scores} | {row['support']} |")
    lines += [
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        "![training curves](training_curves.png)",
        "",
    ]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4f}"
