from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.errors import DataValidationError
from pipeline.feature_store import FeatureStore
from pipeline.stages import run_train
from pipeline.train import TrainParams, select_training_set, train_head
from pipeline.warehouse import Warehouse
from tests.feature_factory import temporal_corpus

pytestmark = pytest.mark.slow


def _setup(settings: Settings, **kwargs: int) -> tuple[Warehouse, FeatureStore]:
    warehouse = Warehouse.connect(settings.warehouse)
    store = FeatureStore.from_settings(settings)
    temporal_corpus(warehouse, store, **kwargs)
    return warehouse, store


def test_head_learns_order_only_classes_and_registers_a_production_version(
    settings: Settings,
) -> None:
    warehouse, _ = _setup(settings, per_class=60)
    result = run_train(settings, TrainParams(epochs=30, patience=5))
    assert not result.reused and result.production
    assert result.model_version == "v0001"
    assert result.class_names == ["down", "up"]
    assert result.metrics["evaluated_on"] == "test"
    assert result.metrics["accuracy"] >= 0.9
    folder = Path(result.model_uri)
    assert (folder / "model.keras").is_file() and (folder / "metadata.json").is_file()
    production = warehouse.production_model()
    assert production is not None and production.model_version == "v0001"
    assert production.settings_hash == settings.settings_hash


def test_same_data_and_parameters_reuse_the_version(settings: Settings) -> None:
    warehouse, _ = _setup(settings, per_class=20)
    params = TrainParams(epochs=2)
    first = run_train(settings, params)
    second = run_train(settings, params)
    assert second.reused and second.model_version == first.model_version
    assert [m.model_version for m in warehouse.models()] == ["v0001"]
    third = run_train(settings, TrainParams(epochs=3))  # new parameters: a new version
    assert not third.reused and third.model_version == "v0002"
    assert not third.production  # the first version stays in production unless promoted
    assert warehouse.production_model().model_version == "v0001"  # type: ignore[union-attr]
    promoted = run_train(settings, TrainParams(epochs=3), promote=True)
    assert promoted.reused and promoted.production


def test_training_is_deterministic_for_a_seed(make_settings) -> None:  # type: ignore[no-untyped-def]
    results = []
    for name in ("a", "b"):
        settings = make_settings(data_dir=str(Path(make_settings().data_dir) / name))
        _setup(settings, per_class=20)
        results.append(run_train(settings, TrainParams(epochs=3)))
    assert results[0].metrics == results[1].metrics


def test_one_class_is_refused_with_a_clear_message(settings: Settings) -> None:
    warehouse = Warehouse.connect(settings.warehouse)
    store = FeatureStore.from_settings(settings)
    labels = temporal_corpus(warehouse, store, per_class=10)
    only_up = [c for c in warehouse.clips(labelled=True) if labels[c.clip_id] == "up"]
    with pytest.raises(DataValidationError, match="at least two classes"):
        train_head(
            only_up,
            store,
            warehouse,
            models_root=settings.models_root,
            feature_settings={},
            params=TrainParams(epochs=1),
        )


def test_clips_without_features_are_left_out(settings: Settings) -> None:
    warehouse, store = _setup(settings, per_class=10)
    clips = warehouse.clips(labelled=True)
    frames = store.segment_frames()
    some = dict(list(frames.items())[:12])
    training_set = select_training_set(clips, some)
    assert sum(training_set.counts.values()) == 12
    assert training_set.streams == ("video",)  # auto: the only stream with frames


def test_streams_can_be_forced_and_clips_without_them_drop_out(settings: Settings) -> None:
    warehouse = Warehouse.connect(settings.warehouse)
    store = FeatureStore.from_settings(settings)
    temporal_corpus(warehouse, store, per_class=10, stream="video", seed=1)
    temporal_corpus(warehouse, store, per_class=10, stream="audio", seed=2)
    clips = warehouse.clips(labelled=True)
    frames = store.segment_frames()
    both = select_training_set(clips, frames, "auto")
    assert both.streams == ("video", "audio") and sum(both.counts.values()) == 40
    audio_only = select_training_set(clips, frames, "audio")
    assert audio_only.streams == ("audio",) and sum(audio_only.counts.values()) == 20


def test_fusion_head_trains_on_a_mix_of_video_and_audio_clips(settings: Settings) -> None:
    warehouse = Warehouse.connect(settings.warehouse)
    store = FeatureStore.from_settings(settings)
    temporal_corpus(warehouse, store, per_class=30, stream="video", seed=1)
    temporal_corpus(warehouse, store, per_class=30, stream="audio", seed=2)
    result = run_train(settings, TrainParams(epochs=20, patience=5))
    assert result.streams == ["video", "audio"]
    assert result.metrics["accuracy"] >= 0.9
