from __future__ import annotations

import numpy as np
import pytest

from pipeline.model.metrics import classification_metrics, confusion_matrix


def test_confusion_matrix_rows_are_truth() -> None:
    matrix = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_metrics_by_hand() -> None:
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 0])
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    # a: P=2/3 R=2/3; b: P=2/3 R=1; c: P=0 R=0
    assert m["per_class"]["a"]["precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["per_class"]["b"]["recall"] == 1.0
    f1 = [2 / 3, 0.8, 0.0]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert m["examples"] == 6


def test_empty_input_has_no_accuracy() -> None:
    m = classification_metrics(np.array([], int), np.array([], int), ["a", "b"])
    assert m["accuracy"] is None and m["macro_f1"] is None
