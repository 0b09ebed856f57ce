from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.errors import StoreError
from pipeline.feature_store import ClipFeatures, FeatureStore, list_settings_folders


def _clip(clip_id: str, frames: int, seed: int) -> ClipFeatures:
    rng = np.random.default_rng(seed)
    return ClipFeatures(
        clip_id, "audio" if seed % 2 else "video", rng.normal(size=(frames, 512)).astype(np.float32)
    )


def test_part_round_trips_through_parquet(tmp_path: Path) -> None:
    store = FeatureStore(str(tmp_path), "abc123")
    clips = [_clip("c1", 3, 1), _clip("c2", 8, 2), _clip("c3", 1, 3)]
    store.write_part(clips)
    assert store.clip_ids() == {"c1", "c2", "c3"}
    found = store.read_features(["c2", "c3", "missing"])
    assert set(found) == {"c2", "c3"}
    np.testing.assert_array_equal(found["c2"].features, clips[1].features)
    assert found["c3"].features.shape == (1, 512)
    assert found["c3"].modality == "audio"
    table = pq.read_table(store.parquet_parts()[0])
    assert table.column_names == [
        "clip_id",
        "settings_hash",
        "modality",
        "n_frames",
        "features",
        "extracted_at",
    ]
    assert table.column("n_frames").to_pylist() == [3, 8, 1]
    assert set(table.column("settings_hash").to_pylist()) == {"abc123"}
    assert store.stats()["clips"] == 3 and store.stats()["frames"] == 12


def test_tfrecord_copy_holds_the_same_numbers(tmp_path: Path) -> None:
    from pipeline.tfenv import tf

    store = FeatureStore(str(tmp_path), "h")
    clips = [_clip("a", 4, 1), _clip("b", 2, 2)]
    store.write_part(clips)
    [part] = store.tfrecord_parts()
    seen = {}
    for record in tf.data.TFRecordDataset([part], compression_type="GZIP"):
        context, sequence = tf.io.parse_single_sequence_example(
            record,
            context_features={
                "clip_id": tf.io.FixedLenFeature([], tf.string),
                "n_frames": tf.io.FixedLenFeature([], tf.int64),
            },
            sequence_features={"features": tf.io.FixedLenSequenceFeature([512], tf.float32)},
        )
        seen[context["clip_id"].numpy().decode()] = (
            int(context["n_frames"]),
            sequence["features"].numpy(),
        )
    assert set(seen) == {"a", "b"}
    for clip in clips:
        n, features = seen[clip.clip_id]
        assert n == clip.features.shape[0]
        np.testing.assert_array_equal(features, clip.features)


def test_rewriting_the_same_clips_replaces_the_part(tmp_path: Path) -> None:
    store = FeatureStore(str(tmp_path), "h")
    first = store.write_part([_clip("a", 2, 1), _clip("b", 2, 2)])
    second = store.write_part([_clip("b", 2, 2), _clip("a", 2, 1)])
    assert first == second
    assert len(store.parquet_parts()) == 1 and len(store.tfrecord_parts()) == 1


def test_tfrecord_part_without_parquet_twin_is_ignored(tmp_path: Path) -> None:
    store = FeatureStore(str(tmp_path), "h")
    store.write_part([_clip("a", 2, 1)])
    orphan = Path(store.tfrecord_dir) / "part-deadbeef.tfrecord.gz"
    orphan.write_bytes(b"crashed before its parquet twin was written")
    assert [Path(p).name for p in store.tfrecord_parts()] != []
    assert str(orphan) not in store.tfrecord_parts()
    assert store.clip_ids() == {"a"}


def test_bad_feature_arrays_are_refused(tmp_path: Path) -> None:
    store = FeatureStore(str(tmp_path), "h")
    nan = _clip("n", 2, 1)
    nan.features[0, 0] = np.nan
    with pytest.raises(StoreError, match="NaN"):
        store.write_part([nan])
    with pytest.raises(StoreError, match="frames, 512"):
        store.write_part([ClipFeatures("w", "video", np.zeros((2, 100), np.float32))])
    assert store.parquet_parts() == []


def test_settings_folders_are_listed(tmp_path: Path) -> None:
    FeatureStore(str(tmp_path), "one").write_part([_clip("a", 1, 1)])
    FeatureStore(str(tmp_path), "two").write_part([_clip("a", 1, 1)])
    assert list_settings_folders(str(tmp_path)) == ["one", "two"]
    FeatureStore(str(tmp_path), "one").write_settings({"image_size": 32})
    assert (tmp_path / "one" / "settings.json").exists()
