from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.errors import StoreError
from pipeline.features.store import (
    FeatureStore,
    SegmentFeatures,
    list_settings_folders,
    parse_sequence_example,
    stores_with_stream,
)

HASHES = {"video": "vh", "audio": "ah"}


def _segment(
    clip_id: str, index: int = 0, count: int = 1, video: int = 3, audio: int = 0, seed: int = 0
) -> SegmentFeatures:
    rng = np.random.default_rng(seed)
    streams = {
        "video": rng.normal(size=(video, 512)).astype(np.float32),
        "audio": rng.normal(size=(audio, 512)).astype(np.float32),
    }
    return SegmentFeatures(clip_id, index, count, 2.0 * index, 2.0 * index + 2, "video", streams)


def _store(tmp_path: Path, name: str = "abc123", hashes: dict[str, str] = HASHES) -> FeatureStore:
    store = FeatureStore(str(tmp_path), name, hashes)
    store.write_settings({"video_hash": hashes["video"], "audio_hash": hashes["audio"]})
    return store


def test_part_round_trips_through_parquet(tmp_path: Path) -> None:
    store = _store(tmp_path)
    rows = [
        _segment("c1", 0, 2, 3, 5, 1),
        _segment("c1", 1, 2, 3, 4, 2),
        _segment("c2", video=8, seed=3),
    ]
    store.write_part(rows)
    assert store.clip_ids() == {"c1", "c2"}
    found = store.read_segments(["c1", "missing"])
    assert list(found) == ["c1"]
    assert [s.segment_index for s in found["c1"]] == [0, 1]
    np.testing.assert_array_equal(found["c1"][1].stream("audio"), rows[1].stream("audio"))
    np.testing.assert_array_equal(found["c1"][0].stream("video"), rows[0].stream("video"))
    only_video = store.read_segments(["c2"], streams=("video",))["c2"][0]
    assert set(only_video.streams) == {"video"} and only_video.stream("audio").shape == (0, 512)
    table = pq.read_table(store.parquet_parts()[0])
    assert table.column("audio_frames").to_pylist() == [5, 4, 0]
    assert set(table.column("video_hash").to_pylist()) == {"vh"}
    assert store.segment_frames() == {
        "c1": [{"video": 3, "audio": 5}, {"video": 3, "audio": 4}],
        "c2": [{"video": 8, "audio": 0}],
    }
    stats = store.stats()
    assert (stats["clips"], stats["segments"], stats["video_frames"], stats["audio_frames"]) == (
        2,
        3,
        14,
        9,
    )


def test_tfrecord_copy_holds_the_same_numbers(tmp_path: Path) -> None:
    from pipeline.tfenv import tf

    store = _store(tmp_path)
    rows = [_segment("a", 0, 1, 4, 2, 1), _segment("b", 0, 1, 0, 3, 2)]
    store.write_part(rows)
    [part] = store.tfrecord_parts()
    seen = {}
    for record in tf.data.TFRecordDataset([part], compression_type="GZIP"):
        parsed = parse_sequence_example(record)
        seen[parsed["clip_id"].numpy().decode()] = {
            s: parsed[s].numpy() for s in ("video", "audio")
        }
    for row in rows:
        for stream in ("video", "audio"):
            np.testing.assert_array_equal(seen[row.clip_id][stream], row.stream(stream))


def test_rewriting_the_same_clips_replaces_the_part(tmp_path: Path) -> None:
    store = _store(tmp_path)
    first = store.write_part([_segment("a"), _segment("b")])
    second = store.write_part([_segment("b"), _segment("a")])
    assert first == second
    assert len(store.parquet_parts()) == 1 and len(store.tfrecord_parts()) == 1


def test_tfrecord_part_without_parquet_twin_is_ignored(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.write_part([_segment("a")])
    orphan = Path(store.tfrecord_dir) / "part-deadbeef.tfrecord.gz"
    orphan.write_bytes(b"crashed before its parquet twin was written")
    assert len(store.tfrecord_parts()) == 1
    assert str(orphan) not in store.tfrecord_parts()


def test_bad_feature_arrays_are_refused(tmp_path: Path) -> None:
    store = _store(tmp_path)
    nan = _segment("n")
    nan.streams["video"][0, 0] = np.nan
    with pytest.raises(StoreError, match="NaN"):
        store.write_part([nan])
    wrong = SegmentFeatures("w", 0, 1, 0.0, 1.0, "video", {"video": np.zeros((2, 100), np.float32)})
    with pytest.raises(StoreError, match="frames, 512"):
        store.write_part([wrong])
    assert store.parquet_parts() == []


def test_folders_sharing_a_stream_hash_are_found(tmp_path: Path) -> None:
    _store(tmp_path, "one", {"video": "v1", "audio": "a1"}).write_part([_segment("a")])
    _store(tmp_path, "two", {"video": "v1", "audio": "a2"}).write_part([_segment("a")])
    assert list_settings_folders(str(tmp_path)) == ["one", "two"]
    assert [s.settings_hash for s in stores_with_stream(str(tmp_path), "video", "v1")] == [
        "one",
        "two",
    ]
    assert [s.settings_hash for s in stores_with_stream(str(tmp_path), "audio", "a2")] == ["two"]
    assert stores_with_stream(str(tmp_path), "video", "v1", exclude="one")[0].settings_hash == "two"


def test_verify_proves_both_copies_agree_and_catches_drift(tmp_path: Path) -> None:
    store = _store(tmp_path)
    name = store.write_part([_segment("a", video=3, audio=2, seed=1), _segment("b", seed=2)])
    report = store.verify()
    assert (report["parts"], report["segments"], report["problems"]) == (1, 2, [])
    # Replace the TFRecord copy with one holding different numbers for clip "a".
    other = _store(tmp_path / "other")
    other_name = other.write_part([_segment("a", video=3, audio=2, seed=9), _segment("b", seed=2)])
    twin = Path(store.tfrecord_dir) / f"{name}.tfrecord.gz"
    twin.write_bytes((Path(other.tfrecord_dir) / f"{other_name}.tfrecord.gz").read_bytes())
    problems = store.verify()["problems"]
    assert problems and all("('a', 0)" in p for p in problems)
    twin.unlink()
    assert store.verify()["problems"] == [f"{name}: TFRecord twin missing"]


def test_reading_some_clips_opens_only_the_parts_that_hold_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scoring reads its chunks part by part; a read must not scan every part of the store
    # (that made scoring 100,000 clips quadratic: 1,099 clips/s at 20,000, 274 at 100,000).
    import pipeline.features.store as store_module

    store = _store(tmp_path)
    for p in range(5):
        store.write_part([_segment(f"clip-{p}-{i}", seed=p * 10 + i) for i in range(3)])
    opened: list[tuple[str, tuple[str, ...]]] = []
    real = store_module.read_part

    def counting(uri: str, columns: list[str]):  # type: ignore[no-untyped-def]
        opened.append((uri, tuple(columns)))
        return real(uri, columns)

    monkeypatch.setattr(store_module, "read_part", counting)
    assert len(store.clip_ids()) == 15  # from the index: no part is opened
    assert opened == []
    rows = store.read_segments(["clip-2-0", "clip-2-2"], streams=("video",))
    assert sorted(rows) == ["clip-2-0", "clip-2-2"]
    assert len(opened) == 1  # the one part that holds them
    np.testing.assert_array_equal(
        rows["clip-2-2"][0].stream("video"), _segment("clip-2-2", seed=22).stream("video")
    )


def _epochs(dataset: Any, epochs: int = 2) -> list[list[tuple[str, int, bytes]]]:
    """Per epoch, the examples in batch order as (clip id, class, video features)."""
    seen = []
    for _ in range(epochs):
        epoch = []
        for inputs, labels, clips in dataset.as_numpy_iterator():
            for video, label, clip in zip(inputs["video"], labels, clips, strict=True):
                frames = video[np.any(video != 0, axis=1)]  # padding off
                epoch.append((clip.decode(), int(label.argmax()), frames.tobytes()))
        seen.append(epoch)
    return seen


@pytest.mark.slow
def test_a_split_over_the_cache_budget_streams_the_same_examples_from_its_parts_only(
    tmp_path: Path,
) -> None:
    from pipeline.model.inputs import Split, feature_dataset

    store = _store(tmp_path)
    for p in range(4):
        rows = [
            _segment(f"c{p}-{i}", s, 2, 2 + s + i, seed=10 * p + i)
            for i in range(4)
            for s in (0, 1)
        ]
        rows.append(_segment(f"audio-only-{p}", video=0, audio=3, seed=99))
        store.write_part(rows)
    store.write_part([_segment("other", seed=5)])  # no clip of the split: its part is not read
    Path(store.tfrecord_uri(store.index().part_of["other"])).unlink()
    labels = {f"c{p}-{i}": (p + i) % 2 for p in range(4) for i in range(3)}
    labels["audio-only-0"] = 1  # no video frames: not an example
    split = Split((), labels, examples=2 * 12)

    def epochs(
        budget: int | None, seed: int | None, source: Any = store
    ) -> list[list[tuple[str, int, bytes]]]:
        dataset = feature_dataset(
            source,
            split,
            ("video",),
            2,
            5,
            shuffle_seed=seed,
            cache_budget_bytes=budget,
        )
        return _epochs(dataset)

    cached, streamed = epochs(None, 7), epochs(0, 7)
    for cached_epoch, streamed_epoch in zip(cached, streamed, strict=True):
        assert len(streamed_epoch) == 24 and sorted(streamed_epoch) == sorted(cached_epoch)
    assert streamed[0] != streamed[1]  # reshuffled every epoch
    assert epochs(0, 7) == streamed  # and deterministic for a seed
    # What the trainer passes: every part's file; the one holding no clip of the split is
    # not opened (it is gone), cached or streamed.
    assert epochs(0, 7, store.tfrecord_parts()) == streamed
    assert epochs(None, 7, store.tfrecord_parts()) == cached
    unshuffled = epochs(0, None)
    assert unshuffled[0] == unshuffled[1] and sorted(unshuffled[0]) == sorted(cached[0])
