from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.model.architecture import (
    build_sequence_head,
    load_classifier,
    model_streams,
    pad_sequences,
    predict_probabilities,
)
from pipeline.tfenv import keras

pytestmark = pytest.mark.slow

UNIT = (np.zeros(512, np.float32), np.ones(512, np.float32))


def test_single_stream_head_is_the_seed_architecture() -> None:
    model = build_sequence_head(5, {"video": UNIT})
    assert model_streams(model) == ["video"]
    lstm = model.get_layer("video_lstm")
    dense = model.get_layer("dense")
    out = model.get_layer("probabilities")
    assert isinstance(lstm, keras.layers.LSTM) and lstm.units == 256
    assert isinstance(dense, keras.layers.Dense) and dense.units == 1024
    assert dense.activation.__name__ == "relu"
    assert out.units == 5 and out.activation.__name__ == "softmax"
    assert [type(layer).__name__ for layer in model.layers] == [
        "InputLayer",
        "Masking",
        "Normalization",
        "LSTM",
        "Dense",
        "Dense",
    ]
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.Nadam)
    assert float(optimizer.learning_rate) == pytest.approx(0.002)
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon) == (0.9, 0.999, 1e-08)
    assert model.loss == "categorical_crossentropy"


def test_two_streams_fuse_before_the_dense_layer() -> None:
    model = build_sequence_head(3, {"video": UNIT, "audio": UNIT})
    assert model_streams(model) == ["video", "audio"]
    fuse = model.get_layer("fuse")
    assert fuse.output.shape[-1] == 512  # two LSTM(256) outputs side by side
    assert model.get_layer("dense").input.shape[-1] == 512


def test_padding_and_missing_streams_are_masked() -> None:
    model = build_sequence_head(3, {"video": UNIT, "audio": UNIT})
    rng = np.random.default_rng(0)
    video = rng.normal(size=(5, 512)).astype(np.float32)
    alone = predict_probabilities(model, [{"video": video}])
    padded = predict_probabilities(
        model,
        [
            {"video": video},
            {
                "video": rng.normal(size=(12, 512)).astype(np.float32),
                "audio": rng.normal(size=(9, 512)).astype(np.float32),
            },
        ],
    )
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-6)
    np.testing.assert_allclose(padded.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(np.isfinite(predict_probabilities(model, [{}])))  # nothing at all: still finite


def test_normalization_statistics_are_part_of_the_saved_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    model = build_sequence_head(
        2, {"audio": (np.full(512, 3.0, np.float32), np.full(512, 4.0, np.float32))}
    )
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = load_classifier(str(path))
    batch = {"audio": pad_sequences([rng.normal(size=(4, 512)).astype(np.float32)])}
    np.testing.assert_allclose(
        model.predict_on_batch(batch), loaded.predict_on_batch(batch), atol=1e-6
    )
    np.testing.assert_allclose(np.asarray(loaded.get_layer("audio_standardize").mean).ravel(), 3.0)
    np.testing.assert_allclose(
        np.asarray(loaded.get_layer("audio_standardize").variance).ravel(), 4.0
    )


def test_pad_sequences_zero_pads_to_the_longest_and_at_least_one_step() -> None:
    batch = pad_sequences([np.ones((2, 512), np.float32), np.ones((4, 512), np.float32)])
    assert batch.shape == (2, 4, 512)
    assert np.all(batch[0, 2:] == 0) and np.all(batch[1] == 1)
    assert pad_sequences([np.zeros((0, 512), np.float32)]).shape == (1, 1, 512)
