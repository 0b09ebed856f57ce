from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.errors import NoProductionModelError
from pipeline.features.store import FeatureStore
from pipeline.stages import run_score, run_train
from pipeline.training.params import TrainParams
from pipeline.warehouse.database import Warehouse
from tests.conftest import pipeline_env
from tests.feature_factory import temporal_corpus

pytestmark = pytest.mark.slow

WHEN = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)


def _unlabelled_video(clip_id: str, uri: str) -> dict[str, object]:
    """A media_files row for an ok, unlabelled video (features are written separately)."""
    return {
        "clip_id": clip_id,
        "uri": uri,
        "media_uri": uri,
        "modality": "video",
        "label": None,
        "split": "train",
        "status": "ok",
        "error": None,
        "size_bytes": 1,
    }


def test_scoring_without_a_production_model_says_what_to_do(settings: Settings) -> None:
    with pytest.raises(NoProductionModelError, match="stpipe train"):
        run_score(settings, run_id="r", logical_date=WHEN)


def test_every_clip_gets_one_prediction_and_scoring_twice_adds_nothing(settings: Settings) -> None:
    warehouse = Warehouse.connect(settings.warehouse)
    store = FeatureStore.from_settings(settings)
    labels = temporal_corpus(warehouse, store, per_class=30, unlabelled=6)
    model = run_train(settings, TrainParams(epochs=15))
    first = run_score(settings, run_id="scheduled__2026-11-28", logical_date=WHEN)
    assert (first.scored, first.candidates, first.model_version) == (66, 66, model.model_version)
    rows = warehouse.query("SELECT * FROM predictions")
    assert len(rows) == 66
    for row in rows:
        probabilities = json.loads(row["probabilities"])
        assert set(probabilities) == {"up", "down"}
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert row["confidence"] == pytest.approx(max(probabilities.values()), abs=1e-5)
        assert row["predicted_label"] == max(probabilities, key=probabilities.get)
        assert row["run_id"] == "scheduled__2026-11-28"
    correct = np.mean(
        [r["predicted_label"] == labels[r["clip_id"]] for r in rows if labels[r["clip_id"]]]
    )
    assert correct >= 0.9

    second = run_score(settings, run_id="again", logical_date=WHEN)
    assert (second.scored, second.already_scored) == (0, 66)
    assert warehouse.query("SELECT * FROM predictions") == rows


def test_clips_without_features_are_counted_not_scored(settings: Settings) -> None:
    warehouse = Warehouse.connect(settings.warehouse)
    store = FeatureStore.from_settings(settings)
    temporal_corpus(warehouse, store, per_class=20)
    run_train(settings, TrainParams(epochs=2))
    warehouse.add_clip(_unlabelled_video("f" * 64, "/x.mp4"))
    summary = run_score(settings, run_id="r", logical_date=WHEN)
    assert summary.missing_features == 1 and summary.scored == 40


def test_nothing_to_score_loads_no_model_and_no_tensorflow(settings: Settings) -> None:
    warehouse = Warehouse.connect(settings.warehouse)
    store = FeatureStore.from_settings(settings)
    temporal_corpus(warehouse, store, per_class=10)
    run_train(settings, TrainParams(epochs=1))
    run_score(settings, run_id="r", logical_date=WHEN)
    script = (
        "import sys, json\n"
        "from pipeline.config import load_settings\n"
        "from pipeline.stages import run_score\n"
        "s = run_score(load_settings(), run_id='again')\n"
        "print(json.dumps({'scored': s.scored, 'tf': 'tensorflow' in sys.modules}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=pipeline_env(settings),
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"scored": 0, "tf": False}


def test_long_clips_get_segment_rows_and_an_averaged_clip_row(settings: Settings) -> None:
    from pipeline.features.store import SegmentFeatures

    warehouse = Warehouse.connect(settings.warehouse)
    store = FeatureStore.from_settings(settings)
    temporal_corpus(warehouse, store, per_class=20)
    run_train(settings, TrainParams(epochs=5))
    rng = np.random.default_rng(5)
    clip_id = "e" * 64
    warehouse.add_clip(_unlabelled_video(clip_id, "/hour.mp4"))
    store.write_part(
        [
            SegmentFeatures(
                clip_id,
                i,
                3,
                10.0 * i,
                10.0 * i + 10,
                "video",
                {"video": np.abs(rng.normal(size=(4, 512))).astype(np.float32)},
            )
            for i in range(3)
        ]
    )
    summary = run_score(settings, run_id="r", logical_date=WHEN)
    assert summary.segments == summary.scored + 2  # 40 one-segment clips + one of three
    segments = warehouse.query(
        "SELECT * FROM segment_predictions WHERE clip_id = :c ORDER BY segment_index",
        {"c": clip_id},
    )
    assert [(s["segment_index"], s["start_seconds"], s["end_seconds"]) for s in segments] == [
        (0, 0.0, 10.0),
        (1, 10.0, 20.0),
        (2, 20.0, 30.0),
    ]
    [clip] = warehouse.query("SELECT * FROM predictions WHERE clip_id = :c", {"c": clip_id})
    mean = np.mean([list(json.loads(s["probabilities"]).values()) for s in segments], axis=0)
    assert list(json.loads(clip["probabilities"]).values()) == pytest.approx(list(mean), abs=1e-5)
    assert clip["n_segments"] == 3


def test_a_clip_whose_scoring_raises_is_quarantined_and_the_rest_scored(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection: predicting one clip raises (say, its features were written by a buggy
    # build). Its chunk is scored again clip by clip; only that clip is quarantined.
    import pipeline.model.inference

    warehouse = Warehouse.connect(settings.warehouse)
    labels = temporal_corpus(
        warehouse, FeatureStore.from_settings(settings), per_class=20, unlabelled=4
    )
    run_train(settings, TrainParams(epochs=2))
    victim = sorted(labels)[3]
    real = pipeline.model.inference.predict_segments

    def flaky(model, kind, clips, *args, **kwargs):  # type: ignore[no-untyped-def]
        if any(c.clip_id == victim for c in clips):
            raise ValueError("shapes (3, 512) and (7,) not aligned")
        return real(model, kind, clips, *args, **kwargs)

    monkeypatch.setattr(pipeline.model.inference, "predict_segments", flaky)
    summary = run_score(settings, run_id="r", logical_date=WHEN)
    assert (summary.scored, summary.quarantined) == (43, 1)
    clip = warehouse.get_clip(victim)
    assert clip is not None and clip.status == "quarantined"
    assert clip.error == "ValueError: shapes (3, 512) and (7,) not aligned"
    scored = {r["clip_id"] for r in warehouse.query("SELECT clip_id FROM predictions")}
    assert scored == set(labels) - {victim}
    warehouse.dispose()
