from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.errors import DataValidationError
from pipeline.features.store import FeatureStore, SegmentFeatures
from pipeline.stages import run_train
from pipeline.training.params import TrainParams
from pipeline.training.selection import class_weights, select_training_set
from pipeline.warehouse.database import Warehouse
from tests.feature_factory import temporal_corpus

pytestmark = pytest.mark.slow


def _setup(settings: Settings, **kwargs: int) -> tuple[Warehouse, FeatureStore]:
    warehouse = Warehouse.connect(settings.warehouse)
    store = FeatureStore.from_settings(settings)
    temporal_corpus(warehouse, store, **kwargs)
    return warehouse, store


def test_head_learns_order_only_classes_and_writes_a_complete_version(settings: Settings) -> None:
    warehouse, _ = _setup(settings, per_class=60)
    result = run_train(settings, TrainParams(epochs=30, patience=5))
    assert not result.reused and result.production and result.kind == "sequence_head"
    assert result.model_version == "v0001"
    assert result.class_names == ["down", "up"]
    assert result.metrics["evaluated_on"] == "test"
    assert result.metrics["accuracy"] >= 0.9
    assert result.val_metrics["macro_f1"] >= 0.9
    assert result.gate["reason"] == "no production model yet"
    folder = Path(result.model_uri)
    for name in (
        "model.keras",
        "metadata.json",
        "confusion_matrix.png",
        "training_curves.png",
        "MODEL_CARD.md",
    ):
        assert (folder / name).is_file(), name
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["params"]["seed"] == settings.seed
    assert len(metadata["history"]["loss"]) == metadata["epochs_run"]
    assert metadata["data_report"]["classes"]["up"]["train"] > 0
    card = (folder / "MODEL_CARD.md").read_text()
    assert "# Model v0001" in card and "macro-F1" in card and "confusion_matrix.png" in card
    assert (Path(metadata["tensorboard"]) / "train").is_dir()  # TensorBoard event files
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
    third = run_train(settings, TrainParams(epochs=3), promote=False)  # new parameters: new version
    assert not third.reused and third.model_version == "v0002" and not third.production
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
    warehouse, store = _setup(settings, per_class=10)
    only_up = [c for c in warehouse.clips(labelled=True) if c.label == "up"]
    with pytest.raises(DataValidationError, match="at least two classes"):
        select_training_set(only_up, store.segment_frames())


def test_too_few_clips_of_a_class_are_refused(settings: Settings) -> None:
    _setup(settings, per_class=10)
    with pytest.raises(DataValidationError, match="min_clips_per_class=50"):
        run_train(settings, TrainParams(epochs=1, min_clips_per_class=50))


def test_nan_features_are_refused(settings: Settings) -> None:
    warehouse, store = _setup(settings, per_class=10)
    bad = "b" * 64
    warehouse.add_clip(
        {
            "clip_id": bad,
            "uri": "/b",
            "media_uri": "/b",
            "modality": "video",
            "label": "up",
            "split": "train",
            "status": "ok",
            "error": None,
            "size_bytes": 1,
        }
    )
    features = np.ones((3, 512), np.float32)
    features[1, 7] = np.nan
    segment = SegmentFeatures(bad, 0, 1, 0.0, 1.0, "video", {"video": features})
    from pipeline.features.store import numpy_to_sequences  # write around write_part's own check

    table = store._to_table(
        [SegmentFeatures(bad, 0, 1, 0.0, 1.0, "video", {"video": np.ones((3, 512), np.float32)})]
    )
    column = table.schema.get_field_index("video")
    table = table.set_column(column, "video", numpy_to_sequences([segment.streams["video"]]))
    import pyarrow.parquet as pq

    pq.write_table(table, Path(store.parquet_dir) / "part-nan.parquet")
    store.compact_index(rescan=True)  # a part written around write_part has no index entry
    with pytest.raises(DataValidationError, match="NaN or infinite"):
        run_train(settings, TrainParams(epochs=1))


def test_clips_without_features_are_left_out(settings: Settings) -> None:
    warehouse, store = _setup(settings, per_class=10)
    clips = warehouse.clips(labelled=True)
    some = dict(list(store.segment_frames().items())[:12])
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


def test_class_weights_balance_skewed_labels(settings: Settings) -> None:
    warehouse, store = _setup(settings, per_class=20)
    frames = store.segment_frames()
    balanced = select_training_set(warehouse.clips(labelled=True), frames)
    assert class_weights(balanced, "auto", frames) is None
    on = class_weights(balanced, "on", frames)
    assert on is not None and set(on) == {0, 1}
    skewed_clips = [c for c in warehouse.clips(labelled=True) if c.label == "up" or c.clip_id < "4"]
    skewed = select_training_set(skewed_clips, frames)
    weights = class_weights(skewed, "auto", frames)
    assert weights is not None and weights[0] > weights[1]  # "down" (index 0) is the rare class


def test_a_worse_model_is_not_promoted(settings: Settings) -> None:
    warehouse, _ = _setup(settings, per_class=40)
    good = run_train(settings, TrainParams(epochs=20, patience=5))
    assert good.production
    # One epoch at a tiny learning rate: far worse on the same test split.
    bad = run_train(settings, TrainParams(epochs=1, learning_rate=1e-6))
    assert not bad.production
    assert bad.gate["promote"] is False
    assert bad.gate["candidate_macro_f1"] < bad.gate["production_macro_f1"]
    assert "below" in bad.gate["reason"]
    assert warehouse.production_model().model_version == good.model_version  # type: ignore[union-attr]


def test_an_equal_or_better_model_is_promoted(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(promotion_margin=-0.01)
    warehouse, _ = _setup(settings, per_class=40)
    run_train(settings, TrainParams(epochs=1, learning_rate=1e-6))
    better = run_train(settings, TrainParams(epochs=20, patience=5))
    assert better.production and better.gate["promote"] is True
    assert warehouse.production_model().model_version == better.model_version  # type: ignore[union-attr]


def test_a_model_depends_on_data_settings_and_seed_not_on_how_features_were_partitioned(
    make_settings,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    # The same features written as one part (like `stpipe extract`) and as many small shards
    # (like the mapped feature_extraction DAG) must train bit-identical weights.
    from pipeline.model.architecture import load_classifier

    weights = []
    for name, part_size in (("one_part", 1000), ("shards", 7)):
        settings = make_settings(data_dir=str(tmp_path / name))
        _, store = _setup(settings, per_class=20, part_size=part_size)
        assert len(store.parquet_parts()) == (1 if part_size == 1000 else 6)
        result = run_train(settings, TrainParams(epochs=3, batch_size=8))
        model = load_classifier(str(Path(result.model_uri) / "model.keras"))
        weights.append(model.get_weights())
    one_part, shards = weights
    assert len(one_part) == len(shards)
    for a, b in zip(one_part, shards, strict=True):
        np.testing.assert_array_equal(a, b)
