"""Classification metrics of clip-level predictions (numpy only): what the training report and the
promotion gate both compare."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt


def confusion_matrix(
    y_true: npt.NDArray[np.int64], y_pred: npt.NDArray[np.int64], n_classes: int
) -> npt.NDArray[np.int64]:
    """``(n_classes, n_classes)`` counts; rows are true classes, columns predicted classes."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def classification_metrics(
    y_true: npt.NDArray[np.int64], y_pred: npt.NDArray[np.int64], class_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1 (over classes present in y_true or y_pred), per-class precision,
    recall and support, and the confusion matrix as nested lists."""
    n = len(class_names)
    matrix = confusion_matrix(y_true, y_pred, n)
    true_pos = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, true_pos / predicted, 0.0)
        recall = np.where(support > 0, true_pos / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = (support > 0) | (predicted > 0)
    total = int(matrix.sum())
    return {
        "accuracy": float(true_pos.sum() / total) if total else None,
        "macro_f1": float(f1[present].mean()) if present.any() else None,
        "examples": total,
        "per_class": {
            name: {
                "precision": round(float(precision[i]), 4),
                "recall": round(float(recall[i]), 4),
                "f1": round(float(f1[i]), 4),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": matrix.tolist(),
    }
