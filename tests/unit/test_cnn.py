"""The real VGG-16 architecture with random init at 32-48 px (no weights download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.features.cnn import CaffePreprocess, build_embedder, build_frame_encoder
from pipeline.features.identity import FEATURE_DIM
from pipeline.tfenv import keras

pytestmark = pytest.mark.slow


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_caffe_preprocess_matches_keras_vgg16_preprocess_input() -> None:
    images = _images(3, 32).astype(np.float32)
    ours = np.asarray(CaffePreprocess()(images))
    reference = keras.applications.vgg16.preprocess_input(images.copy())
    np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_frame_encoder_is_vgg16_without_top_plus_global_average_pooling() -> None:
    encoder = build_frame_encoder("none", 32, seed=1)
    vgg = encoder.get_layer("vgg16")
    convs = [layer for layer in vgg.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 13
    assert [c.filters for c in convs] == [
        64,
        64,
        128,
        128,
        256,
        256,
        256,
        512,
        512,
        512,
        512,
        512,
        512,
    ]
    assert not any(isinstance(layer, keras.layers.Dense) for layer in vgg.layers)
    assert encoder.output_shape == (None, FEATURE_DIM)
    assert not vgg.trainable
    assert vgg.count_params() == 14_714_688  # VGG16(include_top=False)


def test_random_init_is_reproducible_from_the_seed() -> None:
    images = _images(4, 32)
    a = build_embedder("none", 32, "float32", 4, seed=3).embed_frames(images)
    b = build_embedder("none", 32, "float32", 4, seed=3).embed_frames(images)
    c = build_embedder("none", 32, "float32", 4, seed=4).embed_frames(images)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_partial_last_batch_gives_the_same_features_as_single_frames() -> None:
    embedder = build_embedder("none", 32, "float32", 4, seed=0)
    images = _images(6, 32)
    together = embedder.embed_frames(images)
    assert together.shape == (6, FEATURE_DIM)
    assert together.dtype == np.float32
    one_by_one = np.concatenate([embedder.embed_frames(images[i : i + 1]) for i in range(6)])
    np.testing.assert_allclose(together, one_by_one, rtol=1e-5, atol=1e-6)


def test_bfloat16_features_stay_close_to_float32() -> None:
    images = _images(8, 48, seed=5)
    full = build_embedder("none", 48, "float32", 8, seed=0).embed_frames(images)
    half = build_embedder("none", 48, "bfloat16", 8, seed=0).embed_frames(images)
    assert half.dtype == np.float32
    cosine = np.sum(full * half, axis=1) / (
        np.linalg.norm(full, axis=1) * np.linalg.norm(half, axis=1)
    )
    assert cosine.min() >= 0.99
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored


def test_weights_file_loads_into_the_encoder(tmp_path: Path) -> None:
    keras.utils.set_random_seed(11)
    source = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "vgg16_notop.weights.h5"
    source.save_weights(path)
    encoder = build_frame_encoder(str(path), 32, seed=0)
    np.testing.assert_array_equal(
        encoder.get_layer("vgg16").get_layer("block5_conv3").get_weights()[0],
        source.get_layer("block5_conv3").get_weights()[0],
    )


def test_missing_weights_file_and_tiny_images_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        build_frame_encoder(str(tmp_path / "nope.h5"), 32, seed=0)
    with pytest.raises(ConfigError, match="at least 32"):
        build_frame_encoder("none", 16, seed=0)
