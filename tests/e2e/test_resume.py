"""A training run killed with SIGKILL resumes from its last finished epoch when started again,
and ends with a model as good as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.features.store import FeatureStore
from pipeline.warehouse.database import Warehouse
from tests.conftest import pipeline_env
from tests.feature_factory import temporal_corpus

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TRAIN = ["train", "--epochs", "10", "--patience", "100", "--batch-size", "4"]


def _corpus(settings: Settings) -> None:
    with Warehouse.connect(settings.warehouse) as warehouse:
        temporal_corpus(warehouse, FeatureStore.from_settings(settings), per_class=150)


def _start(settings: Settings) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *TRAIN],
        env={**os.environ, **pipeline_env(settings), "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    return output


def test_training_killed_midway_resumes_and_matches_an_uninterrupted_run(make_settings) -> None:  # type: ignore[no-untyped-def]
    root = Path(make_settings().data_dir)
    interrupted = make_settings(data_dir=str(root / "interrupted"))
    reference = make_settings(data_dir=str(root / "reference"))
    _corpus(interrupted)
    _corpus(reference)

    process = _start(interrupted)
    runs = Path(interrupted.runs_root)
    deadline = time.monotonic() + 300
    killed_after = None
    while time.monotonic() < deadline and process.poll() is None:
        states = list(runs.glob("*/state.json"))
        if states:
            epoch = json.loads(states[0].read_text())["epoch"]
            if epoch >= 2:
                process.send_signal(signal.SIGKILL)
                process.wait()
                killed_after = epoch
                break
        time.sleep(0.05)
    assert killed_after is not None, "training finished or hung before it could be killed"
    assert process.returncode == -signal.SIGKILL
    with Warehouse.connect(interrupted.warehouse) as wh:
        assert wh.models() == []  # nothing half-registered

    resumed_output = _finish(_start(interrupted))
    reference_output = _finish(_start(reference))
    resumed = json.loads((Path(interrupted.models_root) / "v0001" / "metadata.json").read_text())
    uninterrupted = json.loads(
        (Path(reference.models_root) / "v0001" / "metadata.json").read_text()
    )
    assert resumed["resumed_from_epoch"] >= killed_after + 1  # no finished epoch was redone
    assert "resuming" in resumed_output
    assert resumed["epochs_run"] == uninterrupted["epochs_run"] == 10
    assert len(resumed["history"]["loss"]) == 10  # the history survived the kill
    assert uninterrupted["resumed_from_epoch"] is None
    assert resumed["metrics"]["accuracy"] >= uninterrupted["metrics"]["accuracy"] - 0.05
    assert resumed["metrics"]["accuracy"] >= 0.9
    assert "resumed_from_epoch" in reference_output
