"""Standardisation statistics: per-dimension mean and variance of the training frames' CNN
features, stored in the model's ``Normalization`` layers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from pipeline.errors import DataValidationError
from pipeline.features.identity import FEATURE_DIM
from pipeline.features.store import FeatureStore


def feature_statistics(
    store: FeatureStore, clip_ids: Sequence[str], stream: str
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Per-dimension mean and variance ``(512,)`` over all ``stream`` frames of ``clip_ids``."""
    count = 0
    total = np.zeros(FEATURE_DIM, np.float64)
    total_sq = np.zeros(FEATURE_DIM, np.float64)
    for frames in store.iter_stream_frames(clip_ids, stream):
        count += frames.shape[0]
        total += frames.sum(axis=0, dtype=np.float64)
        total_sq += np.square(frames, dtype=np.float64).sum(axis=0)
    if count == 0:
        raise DataValidationError(f"no {stream} frames among the training clips")
    mean = total / count
    variance = np.maximum(total_sq / count - mean**2, 0.0)
    return mean.astype(np.float32), variance.astype(np.float32)
