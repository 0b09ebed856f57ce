"""The sequence classifier: LSTM(256) -> Dense(1024, relu) -> Dense(classes, softmax).

The head reads cached VGG-16 features ``(frames, 512)`` of one stream (video frames or audio
windows), or of both with one LSTM each. Padded frames are all-zero vectors and are masked.
Features are standardised per dimension (mean and variance of the training frames, stored in a
``Normalization`` layer inside the model) because random-init VGG-16 features have wildly
different scales per dimension and the LSTM stays at chance without it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline import storage
from pipeline.config import STREAMS
from pipeline.features.cnn import CaffePreprocess, build_frame_encoder, use_precision
from pipeline.features.identity import FEATURE_DIM
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
    stream_statistics: Mapping[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]],
    *,
    learning_rate: float = 0.002,
    lstm_units: int = LSTM_UNITS,
    dense_units: int = DENSE_UNITS,
    dropout: float = 0.0,
) -> keras.Model:
    """Compiled head over one or two feature streams.

    One stream (``video`` or ``audio``) gives exactly the seed's head: masking ->
    standardisation -> LSTM(256) -> Dense(1024, relu) -> Dense(classes, softmax). Two streams
    give a two-branch head: one masked, standardised LSTM per stream, concatenated before the
    Dense(1024) layer; a stream a clip lacks is an all-padding sequence and its LSTM outputs
    zeros.

    Args:
        n_classes: output classes (>= 2).
        stream_statistics: per stream, ``(mean, variance)`` ``(512,)`` over training frames.
        learning_rate: Nadam learning rate.
        lstm_units, dense_units: layer widths (the seed's 256 and 1024 by default).
        dropout: rate of a Dropout layer after each LSTM and after the Dense layer (0 = none,
            the seed's architecture).

    Inputs are named after the streams: ``{"video": (batch, frames, 512), "audio": ...}``.
    """
    streams = _check_streams(n_classes, stream_statistics)
    inputs = {s: keras.Input((None, FEATURE_DIM), name=s) for s in streams}
    branches = []
    for stream in streams:
        x = keras.layers.Masking(mask_value=0.0, name=f"{stream}_mask")(inputs[stream])
        branches.append(_branch(x, stream, stream_statistics[stream], lstm_units, dropout))
    model = keras.Model(
        inputs, _top(branches, n_classes, dense_units, dropout), name="sequence_head"
    )
    compile_classifier(model, learning_rate)
    return model


def build_end_to_end_model(
    n_classes: int,
    stream_statistics: Mapping[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]],
    *,
    cnn_weights: str,
    image_size: int,
    seed: int,
    cnn_trainable: bool = False,
    precision: str = "float32",
    learning_rate: float = 0.002,
    lstm_units: int = LSTM_UNITS,
    dense_units: int = DENSE_UNITS,
    dropout: float = 0.0,
) -> keras.Model:
    """The seed's end-to-end model: ``TimeDistributed(VGG16(include_top=False) + GAP)`` ->
    LSTM(256) -> Dense(1024, relu) -> Dense(classes, softmax), Nadam, categorical
    cross-entropy and accuracy; with the head's standardisation between the CNN and the LSTM.

    Inputs per stream: ``<stream>`` uint8 ``(batch, frames, S, S, 3)`` images and
    ``<stream>_mask`` bool ``(batch, frames)`` (False on padding). Each stream has its own
    VGG-16 encoder, built from the same weights and seed (so frozen, they are the same
    function): an encoder shared by two ``TimeDistributed`` wrappers is saved once but loaded as
    two copies, one without weights. ``cnn_trainable`` unfreezes them for fine-tuning. Layer
    names match :func:`build_sequence_head`, so a head's weights drop in (see
    :func:`head_to_end_to_end`). ``precision`` is the encoders' (``bfloat16``: Keras'
    ``mixed_bfloat16``, as the feature extractor runs it); the head is float32 either way.
    """
    streams = _check_streams(n_classes, stream_statistics)
    inputs: dict[str, Any] = {}
    branches = []
    for stream in streams:
        use_precision(precision)
        try:
            encoder = build_frame_encoder(
                cnn_weights,
                image_size,
                seed=seed,
                trainable=cnn_trainable,
                name=f"{stream}_vgg16_gap",
            )
        finally:
            keras.config.set_dtype_policy("float32")
        frames = keras.Input((None, image_size, image_size, 3), dtype="uint8", name=stream)
        mask = keras.Input((None,), dtype="bool", name=f"{stream}_mask")
        inputs[stream], inputs[f"{stream}_mask"] = frames, mask
        features = FrameWise(encoder, name=f"{stream}_cnn")(frames)
        branches.append(
            _branch(features, stream, stream_statistics[stream], lstm_units, dropout, mask)
        )
    model = keras.Model(inputs, _top(branches, n_classes, dense_units, dropout), name="end_to_end")
    compile_classifier(model, learning_rate)
    return model


@keras.saving.register_keras_serializable(package="stpipe")
class FrameWise(keras.layers.TimeDistributed):
    """``TimeDistributed`` that runs the wrapped layer on all frames of the batch at once
    (batch and time axes merged, then split again): exact for any number of frames.

    Keras' own ``TimeDistributed.call`` loops in Python when the time axis is static but switches
    to ``vectorized_map`` when it is not (any batch after the first traced shape); with VGG-16
    that path returned probabilities differing by about 1e-2 from the frame-by-frame result here
    (Keras 3.15, TensorFlow 2.16), which would break the head/end-to-end parity.
    """

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        shape = keras.ops.shape(inputs)
        merged = keras.ops.reshape(inputs, (-1, *inputs.shape[2:]))
        kwargs = {"training": training} if self.layer._call_has_training_arg else {}
        outputs = self.layer.call(merged, **kwargs)
        return keras.ops.reshape(outputs, (shape[0], shape[1], *outputs.shape[1:]))


def head_to_end_to_end(head: keras.Model, end_to_end: keras.Model) -> None:
    """Copy a trained head's layers (standardisation, LSTMs, Dense) into an end-to-end model
    built with the same streams and widths."""
    for layer in head.layers:
        if layer.weights and not layer.name.endswith("_mask"):
            end_to_end.get_layer(layer.name).set_weights(layer.get_weights())


def _check_streams(n_classes: int, stream_statistics: Mapping[str, Any]) -> list[str]:
    if n_classes < 2:
        raise ValueError("a classifier needs at least two classes")
    streams = [s for s in STREAMS if s in stream_statistics]
    if not streams:
        raise ValueError(f"stream_statistics needs at least one of {STREAMS}")
    return streams


def _branch(
    x: Any,
    stream: str,
    statistics: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]],
    lstm_units: int,
    dropout: float,
    mask: Any = None,
) -> Any:
    mean, variance = statistics
    x = keras.layers.Normalization(
        mean=np.asarray(mean, dtype=np.float32),
        variance=np.asarray(variance, dtype=np.float32),
        name=f"{stream}_standardize",
    )(x)
    lstm = keras.layers.LSTM(lstm_units, name=f"{stream}_lstm")
    x = lstm(x) if mask is None else lstm(x, mask=mask)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"{stream}_dropout")(x)
    return x


def _top(branches: list[Any], n_classes: int, dense_units: int, dropout: float) -> Any:
    x = branches[0] if len(branches) == 1 else keras.layers.Concatenate(name="fuse")(branches)
    x = keras.layers.Dense(dense_units, activation="relu", name="dense")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dense_dropout")(x)
    return keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(x)


def model_streams(model: keras.Model) -> list[str]:
    """The streams a model reads (its input names, masks aside)."""
    names = [t.name.split(":")[0] for t in model.inputs]
    return [s for s in STREAMS if s in names]


def compile_classifier(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=nadam(learning_rate),
        loss="categorical_crossentropy",
        metrics=[keras.metrics.CategoricalAccuracy(name="categorical_accuracy")],
    )


def load_classifier(uri: str, *, compile: bool = False) -> keras.Model:
    """Load a saved ``.keras`` model (head or end-to-end; local path or URI). ``compile=True``
    restores the optimiser state too (to resume training)."""
    if storage.is_remote(uri):
        with tempfile.TemporaryDirectory(prefix="stpipe-model-") as tmp:
            local = str(Path(tmp, "model.keras"))
            storage.copy_file(uri, local)
            return load_classifier(local, compile=compile)
    return keras.models.load_model(
        uri,
        custom_objects={"CaffePreprocess": CaffePreprocess, "FrameWise": FrameWise},
        compile=compile,
    )


def pad_sequences(
    sequences: Sequence[npt.NDArray[np.float32]], max_len: int | None = None
) -> npt.NDArray[np.float32]:
    """Stack ``(L_i, 512)`` arrays into ``(n, max(1, max L), 512)``, zero padding at the end
    (at least one step, so a batch of empty sequences is still a valid, fully masked input)."""
    longest = max_len or max([1, *(s.shape[0] for s in sequences)])
    batch = np.zeros((len(sequences), longest, FEATURE_DIM), dtype=np.float32)
    for i, seq in enumerate(sequences):
        batch[i, : min(longest, seq.shape[0])] = seq[:longest]
    return batch


def predict_probabilities(
    model: keras.Model,
    examples: Sequence[Mapping[str, npt.NDArray[np.float32]]],
    batch_size: int = 256,
) -> npt.NDArray[np.float32]:
    """Class probabilities ``(n, classes)`` for examples given as ``{stream: (frames, 512)}``
    (streams the model does not read are ignored; missing ones count as empty)."""
    streams = model_streams(model)
    empty = np.zeros((0, FEATURE_DIM), np.float32)
    out: list[Any] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = {s: pad_sequences([e.get(s, empty) for e in chunk]) for s in streams}
        out.append(np.asarray(model.predict_on_batch(batch), dtype=np.float32))
    return np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]), np.float32)
