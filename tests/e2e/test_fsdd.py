"""Real speech: a subset of the Free Spoken Digit Dataset through ingest -> extract -> train ->
score, with random-init VGG-16 features at 64 px. The model must learn the ten digits far above
chance (0.1). (The full-dataset result and the official split are reported in the docs.)"""

from __future__ import annotations

import random
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.stages import run_extract, run_ingest, run_score, run_train
from pipeline.training.params import TrainParams
from pipeline.warehouse.database import Warehouse
from tests.conftest import DATASETS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PER_DIGIT = 30


def _subset(target: Path) -> int:
    recordings = sorted((DATASETS / "fsdd" / "recordings").glob("*.wav"))
    assert len(recordings) == 3000, "the FSDD copy in ../shared/datasets is incomplete"
    by_digit: dict[str, list[Path]] = {}
    for path in recordings:
        by_digit.setdefault(path.name.split("_")[0], []).append(path)
    rng = random.Random(0)
    for digit, paths in by_digit.items():
        rng.shuffle(paths)
        (target / digit).mkdir(parents=True)
        for path in paths[:PER_DIGIT]:
            shutil.copy(path, target / digit / path.name)
    return PER_DIGIT * len(by_digit)


def test_fsdd_digits_are_learned_well_above_chance(tmp_path: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    settings: Settings = make_settings(image_size=64, frames_per_segment=16, max_frames=16)
    n = _subset(tmp_path / "fsdd")
    assert run_ingest(settings, str(tmp_path / "fsdd"), labelled=True).added == n
    extract = run_extract(settings)
    assert extract.extracted == n and extract.quarantined == 0
    result = run_train(settings, TrainParams(epochs=60, patience=10))
    assert result.class_names == [str(d) for d in range(10)]
    assert result.metrics["evaluated_on"] == "test"
    assert result.metrics["examples"] >= 20
    assert result.metrics["accuracy"] >= 0.5, result.metrics  # chance is 0.1

    run_score(settings, run_id="fsdd", logical_date=datetime.now(UTC))
    with Warehouse.connect(settings.warehouse) as wh:
        [row] = wh.query(
            "SELECT COUNT(*) AS n, SUM(CASE WHEN predicted_label = true_label THEN 1 ELSE 0 END)"
            " AS correct FROM latest_predictions WHERE split = 'test'"
        )
    assert row["n"] == result.metrics["examples"]
    assert row["correct"] / row["n"] == pytest.approx(result.metrics["accuracy"])
