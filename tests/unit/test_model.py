from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.model import (
    build_sequence_head,
    load_classifier,
    pad_sequences,
    predict_probabilities,
)
from pipeline.tfenv import keras

pytestmark = pytest.mark.slow


def _head(n_classes: int = 3) -> keras.Model:
    return build_sequence_head(n_classes, np.zeros(512, np.float32), np.ones(512, np.float32))


def test_head_is_the_seed_architecture() -> None:
    model = _head(5)
    lstm = model.get_layer("lstm")
    dense = model.get_layer("dense")
    out = model.get_layer("probabilities")
    assert isinstance(lstm, keras.layers.LSTM) and lstm.units == 256
    assert isinstance(dense, keras.layers.Dense) and dense.units == 1024
    assert dense.activation.__name__ == "relu"
    assert out.units == 5 and out.activation.__name__ == "softmax"
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.Nadam)
    assert float(optimizer.learning_rate) == pytest.approx(0.002)
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon) == (0.9, 0.999, 1e-08)
    assert model.loss == "categorical_crossentropy"


def test_padding_is_masked() -> None:
    model = _head()
    rng = np.random.default_rng(0)
    sequence = rng.normal(size=(5, 512)).astype(np.float32)
    alone = predict_probabilities(model, [sequence])
    padded = predict_probabilities(model, [sequence, rng.normal(size=(12, 512)).astype(np.float32)])
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-6)
    np.testing.assert_allclose(alone.sum(axis=1), 1.0, atol=1e-5)


def test_normalization_statistics_are_part_of_the_saved_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    model = build_sequence_head(2, np.full(512, 3.0, np.float32), np.full(512, 4.0, np.float32))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = load_classifier(str(path))
    batch = pad_sequences([rng.normal(size=(4, 512)).astype(np.float32)])
    np.testing.assert_allclose(
        model.predict_on_batch(batch), loaded.predict_on_batch(batch), atol=1e-6
    )
    np.testing.assert_allclose(np.asarray(loaded.get_layer("standardize").mean).ravel(), 3.0)
    np.testing.assert_allclose(np.asarray(loaded.get_layer("standardize").variance).ravel(), 4.0)


def test_pad_sequences_zero_pads_to_the_longest() -> None:
    batch = pad_sequences([np.ones((2, 512), np.float32), np.ones((4, 512), np.float32)])
    assert batch.shape == (2, 4, 512)
    assert np.all(batch[0, 2:] == 0) and np.all(batch[1] == 1)
