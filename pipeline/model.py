"""The sequence classifier: LSTM(256) -> Dense(1024, relu) -> Dense(classes, softmax).

The head reads cached VGG-16 features ``(frames, 512)``. Padded frames are all-zero vectors and
are masked. Features are standardised per dimension (mean and variance of the training frames,
stored in a ``Normalization`` layer inside the model) because random-init VGG-16 features have
wildly different scales per dimension and the LSTM stays at chance without it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline import storage
from pipeline.cnn import FEATURE_DIM, CaffePreprocess
from pipeline.tfenv import keras

LSTM_UNITS = 256
DENSE_UNITS = 1024


def nadam(learning_rate: float = 0.002) -> keras.optimizers.Optimizer:
    """The seed's optimiser: Nadam(lr=0.002, beta_1=0.9, beta_2=0.999, epsilon=1e-08)."""
    return keras.optimizers.Nadam(
        learning_rate=learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-08
    )


def build_sequence_head(
    n_classes: int,
    feature_mean: npt.NDArray[np.float32],
    feature_variance: npt.NDArray[np.float32],
    *,
    learning_rate: float = 0.002,
    lstm_units: int = LSTM_UNITS,
    dense_units: int = DENSE_UNITS,
) -> keras.Model:
    """Compiled head: ``(batch, frames, 512)`` float32 features -> ``(batch, classes)`` probs.

    Args:
        n_classes: output classes (>= 2).
        feature_mean, feature_variance: ``(512,)`` per-dimension statistics of training frames.
        learning_rate: Nadam learning rate.
    """
    if n_classes < 2:
        raise ValueError("a classifier needs at least two classes")
    inputs = keras.Input((None, FEATURE_DIM), name="features")
    x = keras.layers.Masking(mask_value=0.0, name="mask_padding")(inputs)
    x = keras.layers.Normalization(
        mean=np.asarray(feature_mean, dtype=np.float32),
        variance=np.asarray(feature_variance, dtype=np.float32),
        name="standardize",
    )(x)
    x = keras.layers.LSTM(lstm_units, name="lstm")(x)
    x = keras.layers.Dense(dense_units, activation="relu", name="dense")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="sequence_head")
    compile_classifier(model, learning_rate)
    return model


def compile_classifier(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=nadam(learning_rate),
        loss="categorical_crossentropy",
        metrics=[keras.metrics.CategoricalAccuracy(name="categorical_accuracy")],
    )


def load_classifier(uri: str) -> keras.Model:
    """Load a saved ``.keras`` model (head or end-to-end; local path or URI) for inference."""
    if storage.is_remote(uri):
        with tempfile.TemporaryDirectory(prefix="stpipe-model-") as tmp:
            local = str(Path(tmp, "model.keras"))
            storage.copy_file(uri, local)
            return load_classifier(local)
    return keras.models.load_model(
        uri, custom_objects={"CaffePreprocess": CaffePreprocess}, compile=False
    )


def pad_sequences(
    sequences: Sequence[npt.NDArray[np.float32]], max_len: int | None = None
) -> npt.NDArray[np.float32]:
    """Stack ``(L_i, 512)`` arrays into ``(n, max L, 512)`` with zero padding at the end."""
    longest = max_len or max(s.shape[0] for s in sequences)
    batch = np.zeros((len(sequences), longest, FEATURE_DIM), dtype=np.float32)
    for i, seq in enumerate(sequences):
        batch[i, : min(longest, seq.shape[0])] = seq[:longest]
    return batch


def predict_probabilities(
    model: keras.Model, sequences: Sequence[npt.NDArray[np.float32]], batch_size: int = 256
) -> npt.NDArray[np.float32]:
    """Class probabilities ``(n, classes)`` for feature sequences of any lengths."""
    out: list[Any] = []
    for start in range(0, len(sequences), batch_size):
        batch = pad_sequences(sequences[start : start + batch_size])
        out.append(np.asarray(model.predict_on_batch(batch), dtype=np.float32))
    return np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]), np.float32)
