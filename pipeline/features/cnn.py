"""The frozen VGG-16 frame encoder: one 512-d vector per image.

``keras.applications.VGG16(include_top=False)`` followed by global average pooling. The images
enter as uint8 RGB; the Caffe-style preprocessing VGG-16 was trained with (RGB -> BGR, ImageNet
channel means subtracted) is a layer of the model, so the end-to-end model and the cached
features see exactly the same arithmetic.

Importing this module imports TensorFlow; stages import it only when there is work to do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import ConfigError
from pipeline.features.identity import FEATURE_DIM
from pipeline.hardware import cpu_features, onednn_runs_bf16
from pipeline.tfenv import keras, tf

log = logging.getLogger(__name__)

#: ImageNet channel means in BGR order, as keras.applications.vgg16.preprocess_input uses.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="stpipe")
class CaffePreprocess(keras.layers.Layer):
    """uint8/float RGB in [0, 255] -> float BGR with ImageNet means removed (VGG-16's input)."""

    def call(self, inputs: Any) -> Any:
        x = keras.ops.cast(inputs, self.compute_dtype)
        x = keras.ops.flip(x, axis=-1)
        return x - keras.ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=self.compute_dtype)


def build_frame_encoder(
    weights: str, image_size: int, *, seed: int, trainable: bool = False, name: str = "vgg16_gap"
) -> keras.Model:
    """VGG-16 (no top) + global average pooling: ``(S, S, 3)`` uint8 RGB -> ``(512,)`` float32.

    Args:
        weights: ``'imagenet'`` (downloaded once and cached by Keras in ~/.keras/models),
            ``'none'`` (random init, reproducible from ``seed``) or a path to a weights file for
            ``VGG16(include_top=False)``.
        image_size: input rows = cols, >= 32 pixels.
        seed: seed for the random init when ``weights='none'``.
        trainable: False freezes the CNN (the normal mode; features can then be cached).
    """
    if image_size < 32:
        raise ConfigError("VGG-16 needs images of at least 32x32 pixels")
    if weights == "none":
        keras.utils.set_random_seed(seed)
        keras_weights: str | None = None
    elif weights == "imagenet":
        keras_weights = "imagenet"
    else:
        if not Path(weights).is_file():
            raise ConfigError(f"CNN weights file {weights!r} does not exist")
        keras_weights = weights
    inputs = keras.Input((image_size, image_size, 3), name="frame")
    x = CaffePreprocess(name="caffe_preprocess")(inputs)
    try:
        vgg = keras.applications.VGG16(
            include_top=False, weights=keras_weights, input_shape=(image_size, image_size, 3)
        )
    except Exception as exc:  # download failure, wrong file: say what to do
        raise ConfigError(
            f"could not load VGG-16 weights {weights!r}: {exc}. Without internet access, set "
            "PIPELINE_CNN_WEIGHTS to a local vgg16 'notop' weights file, or 'none'."
        ) from exc
    vgg.trainable = trainable
    x = vgg(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Activation("linear", dtype="float32", name="features")(x)
    return keras.Model(inputs, outputs, name=name)


def use_precision(precision: str) -> None:
    """Set Keras' global dtype policy before building a model (bfloat16 = mixed_bfloat16;
    on a host whose TensorFlow cannot run bfloat16 convolutions, a ConfigError says what to
    do)."""
    policy = {"float32": "float32", "bfloat16": "mixed_bfloat16"}.get(precision)
    if policy is None:
        raise ConfigError(f"unknown CNN precision {precision!r}; use float32, bfloat16 or auto")
    if precision == "bfloat16":
        _check_bf16_runs_here()
    keras.config.set_dtype_policy(policy)


def _check_bf16_runs_here() -> None:
    """Stop with what to do where TensorFlow cannot run bfloat16 convolutions at all."""
    host = cpu_features()
    if not host.gpus and not onednn_runs_bf16(host):
        raise ConfigError(
            f"this host's CPU ({host.isa}) has no bfloat16 convolutions in oneDNN, and this "
            "deployment's features are bfloat16. Set TF_ENABLE_ONEDNN_OPTS=0 in this worker's "
            "environment (TensorFlow's own bfloat16 kernels: same features, about 2.5x slower "
            "than a bfloat16 CPU), run extraction on hosts with AVX-512, or pin "
            "PIPELINE_CNN_PRECISION=float32 for the whole deployment."
        )


class FrameEmbedder:
    """Runs the frame encoder over any number of images in fixed-size batches.

    The last partial batch is padded to the batch size so the traced graph is reused.
    """

    encoder_output_dim = FEATURE_DIM

    def __init__(self, encoder: keras.Model, batch_size: int) -> None:
        self.encoder = encoder
        self.batch_size = batch_size
        size = encoder.input_shape[1]
        self._forward: Callable[[Any], Any] = tf.function(
            lambda x: encoder(x, training=False),
            input_signature=[tf.TensorSpec((batch_size, size, size, 3), tf.uint8)],
            reduce_retracing=True,
        )

    def embed_frames(self, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """uint8 ``(n, S, S, 3)`` RGB images -> float32 ``(n, 512)`` features."""
        n = images.shape[0]
        out = np.empty((n, FEATURE_DIM), dtype=np.float32)
        for start in range(0, n, self.batch_size):
            batch = images[start : start + self.batch_size]
            filled = batch.shape[0]
            if filled < self.batch_size:
                pad = np.zeros((self.batch_size - filled, *batch.shape[1:]), dtype=np.uint8)
                batch = np.concatenate([batch, pad])
            out[start : start + filled] = self._forward(batch).numpy()[:filled]
        return out


def build_embedder(
    weights: str, image_size: int, precision: str, batch_size: int, seed: int
) -> FrameEmbedder:
    """The extractor a stage uses: encoder at the requested precision, batched, and warmed up
    (traced and run once), so that the first real batch runs at full speed."""
    use_precision(precision)
    try:
        encoder = build_frame_encoder(weights, image_size, seed=seed)
    finally:
        keras.config.set_dtype_policy("float32")
    embedder = FrameEmbedder(encoder, batch_size)
    embedder.embed_frames(np.zeros((1, image_size, image_size, 3), np.uint8))
    host = cpu_features()
    log.info(
        "VGG-16 frame encoder ready: weights=%s, %dx%d, %s, batch %d, devices=%s, %s",
        weights,
        image_size,
        image_size,
        precision,
        batch_size,
        [d.device_type for d in tf.config.list_logical_devices()],
        host.describe(),
    )
    if precision == "bfloat16" and not host.bf16_native:
        log.warning(
            "this host computes bfloat16 without hardware support (%s): features stay those "
            "of the deployment's precision, but VGG-16 runs several times slower here",
            host.isa,
        )
    return embedder
