"""The end-to-end model trained data-parallel over two devices of one worker
(``tf.distribute.MirroredStrategy``, :mod:`pipeline.training.replicas`) ends with the model,
metrics and predictions of one device, to within float rounding.

Each training runs in a fresh interpreter that splits its CPU into two logical devices before
TensorFlow initialises them; the one-device run gets the same two devices and uses one, so the
runs differ only in the replica count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.stages import run_ingest
from pipeline.warehouse.database import Warehouse
from tests.conftest import pipeline_env
from tests.media_factory import colour_video
from tests.model_files import keras_file_weights

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _train(settings: Settings, devices: int, out: Path) -> dict[str, Any]:
    code = (
        "import sys; from tests.replica_training import train_with_devices; "
        "train_with_devices(int(sys.argv[1]), sys.argv[2])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(devices), str(out)],
        env={**os.environ, **pipeline_env(settings)},
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    if devices > 1:
        assert f"train: {devices} replicas" in result.stderr
    else:
        assert " replicas (" not in result.stderr  # one device: no strategy at all
    run: dict[str, Any] = json.loads(out.read_text())
    run["weights"] = keras_file_weights(Path(run["model"]).read_bytes())
    return run


def test_two_replicas_train_the_model_one_device_trains(tmp_path: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    for i in range(12):
        shade = 250 - 8 * i
        colour_video(tmp_path / "in" / "rb" / f"{i}.mp4", [(shade, 0, 0), (0, 0, shade)])
        colour_video(tmp_path / "in" / "br" / f"{i}.mp4", [(0, 0, shade), (shade, 0, 0)])
    runs = {}
    for devices in (1, 2):
        settings: Settings = make_settings(data_dir=str(tmp_path / f"devices-{devices}"))
        run_ingest(settings, str(tmp_path / "in"), labelled=True)
        with Warehouse.connect(settings.warehouse) as warehouse:
            splits = Counter(c.split for c in warehouse.clips(labelled=True))
        # 20 training clips of one segment: every batch of 4 splits 2 + 2. (A last batch that
        # splits unevenly is averaged per replica, not per example: see replicas.py.)
        assert splits["train"] == 20
        runs[devices] = _train(settings, devices, tmp_path / f"devices-{devices}.json")
    one, two = runs[1], runs[2]

    # The global batch is kept, so each step's gradient is one device's up to the order of
    # float32 sums. Losses and predictions agree to float rounding. Weights differ a little
    # more: Nadam moves every weight by about the learning rate (0.002) per step whatever the
    # gradient's size, so where gradients are near zero their rounding decides a fraction of
    # a step (measured: 1.1e-4 at most, on weights up to 0.15); a quarter step is allowed.
    assert one["weights"].keys() == two["weights"].keys()
    for name, weights in one["weights"].items():
        np.testing.assert_allclose(two["weights"][name], weights, rtol=0, atol=5e-4, err_msg=name)
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(two["history"][key], one["history"][key], rtol=1e-4, atol=1e-6)
    assert two["metrics"]["accuracy"] == one["metrics"]["accuracy"] == 1.0
    assert two["probabilities"].keys() == one["probabilities"].keys()
    for clip_id, probabilities in one["probabilities"].items():
        np.testing.assert_allclose(two["probabilities"][clip_id], probabilities, atol=1e-5)
