"""Reading a saved ``.keras`` model's weights without TensorFlow (h5py only), so a test can
compare models trained in subprocesses and still start more subprocesses afterwards."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np


def keras_file_weights(data: bytes) -> dict[str, np.ndarray[Any, Any]]:
    """Every weight array of a ``.keras`` file's bytes, by its HDF5 path."""
    import h5py

    arrays: dict[str, np.ndarray[Any, Any]] = {}

    def keep(name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset):
            arrays[name] = item[()]

    with (
        zipfile.ZipFile(io.BytesIO(data)) as archive,
        h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights,
    ):
        weights.visititems(keep)
    return arrays
