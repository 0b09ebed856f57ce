"""The feature store's index: written with each part, compacted atomically, migrated, trusted
only for committed parts, and safe with several writers at once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import storage
from pipeline.features import index as index_module
from pipeline.features.index import KEEP_GENERATIONS, compact
from pipeline.features.store import FeatureStore, SegmentFeatures

HASHES = {"video": "vh", "audio": "ah"}
REPO = Path(__file__).resolve().parents[2]


def _segment(clip_id: str, index: int = 0, count: int = 1, video: int = 3) -> SegmentFeatures:
    rng = np.random.default_rng(abs(hash((clip_id, index))) % 2**32)
    streams = {
        "video": rng.normal(size=(video, 512)).astype(np.float32),
        "audio": np.zeros((0, 512), np.float32),
    }
    return SegmentFeatures(clip_id, index, count, 2.0 * index, 2.0 * index + 2, "video", streams)


def _store(root: Path) -> FeatureStore:
    store = FeatureStore(str(root), "abc123", HASHES)
    store.write_settings({"video_hash": "vh", "audio_hash": "ah"})
    return store


def _files(store: FeatureStore, sub: str) -> list[str]:
    folder = Path(store.folder) / sub
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_each_part_is_written_with_its_index_entry(tmp_path: Path) -> None:
    store = _store(tmp_path)
    name = store.write_part([_segment("a", 0, 2, 4), _segment("a", 1, 2, 5), _segment("b")])
    assert f"{name}.parquet" in _files(store, "index/parts")
    entry = pq.read_table(Path(store.index_dir) / "parts" / f"{name}.parquet").to_pylist()
    assert [(r["clip_id"], r["segment_index"], r["video_frames"]) for r in entry] == [
        ("a", 0, 4),
        ("a", 1, 5),
        ("b", 0, 3),
    ]
    assert entry[0]["part_bytes"] == sum(
        os.path.getsize(p) for p in (store.parquet_uri(name), store.tfrecord_uri(name))
    )
    assert store.segment_frames(["a"]) == {
        "a": [{"video": 4, "audio": 0}, {"video": 5, "audio": 0}]
    }
    assert store.stats()["bytes"] == entry[0]["part_bytes"]


def test_an_entry_whose_part_is_not_committed_is_invisible(tmp_path: Path) -> None:
    # A writer killed after the index entry and before the Parquet commit marker.
    store = _store(tmp_path)
    kept = store.write_part([_segment("a")])
    lost = store.write_part([_segment("b")])
    Path(store.parquet_uri(lost)).unlink()
    fresh = FeatureStore(str(tmp_path), "abc123")
    assert fresh.clip_ids() == {"a"}
    assert fresh.parquet_parts() == [fresh.parquet_uri(kept)]
    assert fresh.compact_index().parts == 1  # compaction leaves the orphan entry out too
    assert FeatureStore(str(tmp_path), "abc123").clip_ids() == {"a"}
    assert fresh.verify()["problems"] == []
    # The retry commits it, and every reader sees it without compacting again.
    store.write_part([_segment("b")])
    assert FeatureStore(str(tmp_path), "abc123").clip_ids() == {"a", "b"}


def test_compaction_merges_entries_atomically_and_is_idempotent(tmp_path: Path) -> None:
    store = _store(tmp_path)
    for p in range(5):
        store.write_part([_segment(f"c{p}-{i}") for i in range(3)])
    before = store.index()
    first = store.compact_index()
    assert (first.parts, first.merged) == (5, 5)
    again = store.compact_index()
    assert (again.generation, again.merged) == (first.generation, 0)  # nothing new: no write
    store.write_part([_segment("late")])
    second = store.compact_index()
    assert second.generation == first.generation + 1 and second.merged == 1
    store.write_part([_segment("later")])
    third = store.compact_index()
    generations = [n for n in _files(store, "index") if n.startswith("compacted-")]
    assert generations == [  # the newest few are kept for readers that listed them
        f"compacted-{g:010d}.parquet"
        for g in range(third.generation - KEEP_GENERATIONS + 1, third.generation + 1)
    ]
    assert not any(".tmp-" in n for n in _files(store, "index"))
    reader = FeatureStore(str(tmp_path), "abc123")
    after = reader.index()
    assert (after.generation, after.uncompacted) == (third.generation, 0)
    assert after.clip_ids() == before.clip_ids() | {"late", "later"}
    one = [{"video": 3, "audio": 0}]
    assert after.segment_frames() == {**before.segment_frames(), "late": one, "later": one}


def test_a_store_written_before_the_index_is_indexed_on_first_use(tmp_path: Path) -> None:
    store = _store(tmp_path)
    names = [store.write_part([_segment(f"old{p}-{i}") for i in range(2)]) for p in range(3)]
    shutil.rmtree(store.index_dir)  # what a store written by the previous version looks like
    reader = FeatureStore(str(tmp_path), "abc123")
    assert reader.clip_ids() == {f"old{p}-{i}" for p in range(3) for i in range(2)}
    assert _files(reader, "index") == ["compacted-0000000001.parquet"]
    assert reader.index().parts == sorted(names)
    assert reader.verify()["problems"] == []
    # A writer that comes next migrates first, so its entry never hides the old parts.
    shutil.rmtree(store.index_dir)
    writer = FeatureStore(str(tmp_path), "abc123", HASHES)
    writer.write_part([_segment("new")])
    assert FeatureStore(str(tmp_path), "abc123").clip_ids() == {
        *(f"old{p}-{i}" for p in range(3) for i in range(2)),
        "new",
    }


def test_reads_open_only_the_parts_they_need(tmp_path: Path) -> None:
    store = _store(tmp_path)
    parts = {p: store.write_part([_segment(f"p{p}-{i}") for i in range(2)]) for p in range(4)}
    store.compact_index()
    for p in (0, 1, 3):  # only part 2 stays readable
        Path(store.parquet_uri(parts[p])).unlink()
        Path(store.tfrecord_uri(parts[p])).unlink()
    reader = FeatureStore(str(tmp_path), "abc123")
    assert len(reader.clip_ids()) == 8
    assert reader.segment_frames(["p0-0"]) == {"p0-0": [{"video": 3, "audio": 0}]}
    assert sorted(reader.read_segments(["p2-1", "p2-0"])) == ["p2-0", "p2-1"]
    assert [a.shape for a in reader.iter_stream_frames(["p2-0"], "video")] == [(3, 512)]
    assert reader.tfrecord_parts(["p2-1"]) == [reader.tfrecord_uri(parts[2])]
    assert reader.stats()["clips"] == 8
    problems = reader.verify()["problems"]
    assert len(problems) == 3 and all("Parquet file is missing" in p for p in problems)


def test_verify_finds_a_committed_part_missing_from_the_index(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.write_part([_segment("a")])
    hidden = store.write_part([_segment("b")])
    # An index that lost part b (say, rebuilt while b's Parquet file was elsewhere).
    shutil.rmtree(store.index_dir)
    Path(store.parquet_uri(hidden)).rename(tmp_path / "aside.parquet")
    store.compact_index(rescan=True)
    (tmp_path / "aside.parquet").rename(store.parquet_uri(hidden))
    reader = FeatureStore(str(tmp_path), "abc123")
    assert reader.clip_ids() == {"a"}
    assert reader.verify()["problems"] == [
        f"{hidden}: committed but not in the index; run `stpipe features compact --rescan`"
    ]
    reader.compact_index(rescan=True)
    assert FeatureStore(str(tmp_path), "abc123").clip_ids() == {"a", "b"}


_WRITER = """
import sys
import numpy as np
from pipeline.features.store import FeatureStore, SegmentFeatures

root, worker, parts, per_part = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
store = FeatureStore(root, "abc123", {"video": "vh", "audio": "ah"})
for p in range(parts):
    rows = []
    for i in range(per_part):
        video = np.full((2, 512), worker + p / 100, np.float32)
        streams = {"video": video, "audio": np.zeros((0, 512), np.float32)}
        rows.append(SegmentFeatures(f"w{worker}-p{p}-c{i}", 0, 1, 0.0, 1.0, "video", streams))
    store.write_part(rows)
    store.compact_index()
    # What this writer wrote is visible to a fresh reader at once, whoever compacted last.
    assert {r.clip_id for r in rows} <= FeatureStore(root, "abc123").clip_ids()
"""


@pytest.mark.slow
def test_concurrent_writers_and_compactors_leave_a_consistent_index(tmp_path: Path) -> None:
    # Extraction shards on different workers write and compact the same folder at once. Before
    # generations were created exclusively, two compactors could write the same generation and
    # a reader between them read half of each: most writers here then failed.
    writers, parts, per_part = 4, 12, 5
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), str(w), str(parts), str(per_part)],
            env=env,
        )
        for w in range(writers)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0] * writers
    expected = {
        f"w{w}-p{p}-c{i}" for w in range(writers) for p in range(parts) for i in range(per_part)
    }
    store = FeatureStore(str(tmp_path), "abc123")
    assert store.clip_ids() == expected
    assert len(store.parquet_parts()) == writers * parts
    result = compact(store.folder)
    assert result.parts == writers * parts
    fresh = FeatureStore(str(tmp_path), "abc123")
    assert fresh.index().uncompacted == 0 and fresh.clip_ids() == expected
    assert fresh.verify()["problems"] == []


_KILLED = """
import os, signal, sys
import numpy as np
import pipeline.features.store as store_module
from pipeline.features.store import FeatureStore, SegmentFeatures

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

root = sys.argv[1]
store = FeatureStore(root, "abc123", {"video": "vh", "audio": "ah"})
streams = {"video": np.ones((2, 512), np.float32), "audio": np.zeros((0, 512), np.float32)}
store.write_part([SegmentFeatures("first", 0, 1, 0.0, 1.0, "video", streams)])
if sys.argv[2] == "entry":  # killed while writing the index entry
    store_module.write_entry = die
else:  # killed after the entry, before the Parquet commit marker is renamed into place
    real = store_module.write_entry
    def entry_then_die(*args, **kwargs):
        real(*args, **kwargs)
        die()
    store_module.write_entry = entry_then_die
store.write_part([SegmentFeatures("second", 0, 1, 0.0, 1.0, "video", streams)])
"""


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["entry", "commit"])
def test_a_writer_killed_between_files_leaves_no_visible_half_part(
    tmp_path: Path, moment: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED, str(tmp_path), moment], env=env, timeout=300
    )
    assert proc.returncode == -9
    store = FeatureStore(str(tmp_path), "abc123")
    assert store.clip_ids() == {"first"}
    assert store.compact_index().parts == 1
    assert store.verify()["problems"] == []
    assert len(list(Path(store.parquet_dir).glob("part-*.parquet"))) == 1  # hidden temps aside
    FeatureStore(str(tmp_path), "abc123", HASHES).write_part([_segment("second")])
    assert FeatureStore(str(tmp_path), "abc123").clip_ids() == {"first", "second"}


def test_a_compactor_that_loses_a_generation_merges_again_onto_the_winners_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    store.write_part([_segment("a")])
    first = compact(store.folder).generation
    store.write_part([_segment("b")])
    real_create = storage.create_exclusive
    won: list[tuple[Path, bytes]] = []

    def rival_first(uri: str, data: bytes) -> bool:
        # Another host compacts between this compactor's listing and its write, and one more
        # part is committed after that.
        monkeypatch.setattr(storage, "create_exclusive", real_create)
        rival = compact(store.folder)
        path = Path(store.index_dir, f"compacted-{rival.generation:010d}.parquet")
        won.append((path, path.read_bytes()))
        store.write_part([_segment("c")])
        return real_create(uri, data)

    monkeypatch.setattr(storage, "create_exclusive", rival_first)
    result = compact(store.folder)
    [(path, written)] = won
    assert path.name == f"compacted-{first + 1:010d}.parquet"
    assert (result.generation, result.parts, result.merged) == (first + 2, 3, 1)
    assert path.read_bytes() == written  # the winner's file never changed
    assert index_module.read_parquet(str(path)).column("part").length() == 2
    fresh = FeatureStore(str(tmp_path), "abc123")
    assert fresh.clip_ids() == {"a", "b", "c"} and fresh.index().uncompacted == 0
