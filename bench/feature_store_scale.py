"""Benchmark: the feature store at 10,000, 100,000 and 1,000,000 clips, with and without its index.

Set-up (cached in ``bench/.cache/feature_store_scale/``, reused between runs): per size, a
feature folder of synthetic clips written with ``FeatureStore.write_part`` (TFRecord, index
entry, Parquet, as extraction writes them), ``--clips-per-part`` clips a part, then one
compaction. To keep a million clips to minutes of writing and a few GB of disk, every clip is
**one segment of one video frame** (512 float32, a constant row per clip, which compresses
well); a real clip has tens of frames, which makes parts bigger, not more numerous.

Measured, each in a fresh child process (its peak RSS from ``getrusage``):

* **planning**: what extraction planning does (``stpipe``'s ``plan_extraction`` and each
  shard): the store's clip ids, then the warehouse's ok clips that lack features, with all
  clips cached plus ``--new`` clips that are not. *index*: ``FeatureStore.clip_ids()`` (one
  compacted index file); *listing*: what the store did before the index (list the Parquet
  parts, read the clip-id column of every one).
* **read**: the segments of ``--new`` random cached clips (what scoring a chunk and copying
  reusable streams do): *index* opens only the parts holding them; *listing* first reads the
  clip ids of every part, as before.
* **training input**: one epoch of ``feature_dataset`` over a random ``--train-fraction`` of
  the clips (batches of 64, shuffled): *cached* (the previous behaviour: every segment held in
  memory) and *streamed* (what the store now does over the cache budget), segments/s and
  peak RSS.

    .venv/bin/python bench/feature_store_scale.py [--sizes 10000,100000,1000000] [--clips-per-part 200] [--new 100] [--train-fraction 0.1]

Run it with nothing else heavy on the machine; compare the columns of one row and the growth
between rows, not the absolute times with another machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import CACHE, REPO, header, machine, save

ROOT = CACHE / "feature_store_scale"
HASHES = {"video": "bench-video", "audio": "bench-audio"}


def clip_id(i: int) -> str:
    return hashlib.sha256(f"bench-clip-{i}".encode()).hexdigest()


def build(size: int, clips_per_part: int) -> Path:
    """The feature root of ``size`` clips (written once, then reused)."""
    from pipeline.features.store import FeatureStore, SegmentFeatures

    root = ROOT / f"{size}-{clips_per_part}"
    done = root / "complete"
    if done.exists():
        return root
    store = FeatureStore(str(root), "scale", HASHES)
    store.write_settings({"video_hash": HASHES["video"], "audio_hash": HASHES["audio"]})
    empty = np.zeros((0, 512), np.float32)
    started = time.perf_counter()
    for start in range(0, size, clips_per_part):
        rows = [
            SegmentFeatures(
                clip_id(i),
                0,
                1,
                0.0,
                1.0,
                "video",
                {"video": np.full((1, 512), (i % 997) / 997, np.float32), "audio": empty},
            )
            for i in range(start, min(size, start + clips_per_part))
        ]
        store.write_part(rows)
    store.compact_index()
    done.write_text(f"{time.perf_counter() - started:.1f} s\n")
    print(f"  wrote {size:,} clips in {size // clips_per_part:,} parts in {done.read_text()}")
    return root


# Measurements, each run in its own process -------------------------------------------------


def measure(kind: str, root: str, size: int, new: int, fraction: float) -> dict[str, Any]:
    from pipeline.features.store import FeatureStore

    store = FeatureStore(root, "scale")
    rng = random.Random(0)
    if kind.startswith("plan"):
        warehouse = [clip_id(i) for i in range(size + new)]
        started = time.perf_counter()
        done = store.clip_ids() if kind == "plan_index" else _listing_clip_ids(store)
        pending = [c for c in warehouse if c not in done]
        seconds = time.perf_counter() - started
        assert len(pending) == new, len(pending)
        return {"seconds": seconds}
    if kind.startswith("read"):
        wanted = [clip_id(i) for i in rng.sample(range(size), new)]
        started = time.perf_counter()
        if kind == "read_index":
            found = store.read_segments(wanted)
        else:
            found = _listing_read(store, set(wanted))
        seconds = time.perf_counter() - started
        assert len(found) == new
        return {"seconds": seconds}
    return _train_input(store, size, fraction, streamed=kind == "train_streamed")


def _listing_clip_ids(store: Any) -> set[str]:
    """The store's clip ids as read before the index: every part's clip-id column."""
    return set().union(*_listing_clips_by_part(store).values())


def _listing_clips_by_part(store: Any) -> dict[str, frozenset[str]]:
    import pyarrow.parquet as pq

    from pipeline import storage

    parts = storage.list_files(store.parquet_dir, (".parquet",))
    return {p: frozenset(pq.read_table(p, columns=["clip_id"])[0].to_pylist()) for p in parts}


def _listing_read(store: Any, wanted: set[str]) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.features.store import sequences_to_numpy

    found: dict[str, Any] = {}
    for part, held in _listing_clips_by_part(store).items():
        if held.isdisjoint(wanted):
            continue
        table = pq.read_table(part, columns=["clip_id", "segment_index", "video"])
        keep = [i for i, c in enumerate(table.column("clip_id").to_pylist()) if c in wanted]
        table = table.take(pa.array(keep, pa.int64()))
        for clip, video in zip(
            table.column("clip_id").to_pylist(),
            sequences_to_numpy(table.column("video")),
            strict=True,
        ):
            found.setdefault(clip, []).append(video)
    return found


def _train_input(store: Any, size: int, fraction: float, *, streamed: bool) -> dict[str, Any]:
    from pipeline.model.inputs import Split, feature_dataset
    from pipeline.tfenv import tf

    tf.constant(0)  # TensorFlow's start-up is not the input pipeline's time
    rng = random.Random(1)
    chosen = rng.sample(range(size), int(size * fraction))
    labels = {clip_id(i): i % 2 for i in chosen}
    split = Split((), labels, examples=len(labels))
    started = time.perf_counter()
    dataset = feature_dataset(
        store.tfrecord_parts(),  # what the trainer passes
        split,
        ("video",),
        2,
        64,
        shuffle_seed=0,
        cache_budget_bytes=0 if streamed else 1 << 40,
    )
    segments = 0
    for _, labels_batch, _ in dataset:
        segments += int(labels_batch.shape[0])
    seconds = time.perf_counter() - started
    assert segments == len(labels), (segments, len(labels))
    return {"seconds": seconds, "segments": segments, "segments_per_s": segments / seconds}


def run_child(kind: str, root: Path, size: int, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--measure",
        kind,
        "--root",
        str(root),
        "--size",
        str(size),
        "--new",
        str(args.new),
        "--train-fraction",
        str(args.train_fraction),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{kind} at {size:,} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--clips-per-part", type=int, default=200)
    parser.add_argument("--new", type=int, default=100)
    parser.add_argument("--train-fraction", type=float, default=0.1)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        result = measure(args.measure, args.root, args.size, args.new, args.train_fraction)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    facts = machine()
    header("Feature store at scale")
    print(f"CPU: {facts['cpu']}, {facts['cores']} cores")
    print(
        f"synthetic clips: 1 segment x 1 video frame x 512 float32 each, "
        f"{args.clips_per_part} clips a part"
    )
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for size in sizes:
        root = build(size, args.clips_per_part)
        row: dict[str, Any] = {"clips": size, "parts": -(-size // args.clips_per_part)}
        for kind in (
            "plan_index",
            "plan_listing",
            "read_index",
            "read_listing",
            "train_streamed",
            "train_cached",
        ):
            row[kind] = run_child(kind, root, size, args)
            print(f"  {size:>9,} {kind:<15} {json.dumps(row[kind])}", flush=True)
        rows.append(row)

    header("results")
    print(
        f"| clips | parts | plan: index s | plan: listing s | listing/index | read {args.new}: "
        "index s | read: listing s | train streamed seg/s (MB) | train cached seg/s (MB) |"
    )
    for r in rows:
        print(
            f"| {r['clips']:,} | {r['parts']:,} | {r['plan_index']['seconds']:.2f} | "
            f"{r['plan_listing']['seconds']:.2f} | "
            f"{r['plan_listing']['seconds'] / r['plan_index']['seconds']:.1f}x | "
            f"{r['read_index']['seconds']:.2f} | {r['read_listing']['seconds']:.2f} | "
            f"{r['train_streamed']['segments_per_s']:,.0f} ({r['train_streamed']['peak_rss_mb']:.0f}) | "
            f"{r['train_cached']['segments_per_s']:,.0f} ({r['train_cached']['peak_rss_mb']:.0f}) |"
        )
    first, last = rows[0], rows[-1]
    scale = last["clips"] / first["clips"]
    growth = {
        kind: last[kind]["seconds"] / first[kind]["seconds"]
        for kind in ("plan_index", "plan_listing", "read_index", "read_listing")
    }
    growth["train_streamed"] = (
        last["train_streamed"]["seconds"] / first["train_streamed"]["seconds"]
    )
    memory = {
        kind: last[kind]["peak_rss_mb"] / first[kind]["peak_rss_mb"]
        for kind in ("train_streamed", "train_cached", "plan_index")
    }
    print(
        f"\n{scale:,.0f}x the clips: time x {json.dumps({k: round(v, 1) for k, v in growth.items()})}"
    )
    print(f"peak RSS x {json.dumps({k: round(v, 2) for k, v in memory.items()})}")
    save(
        "feature_store_scale",
        {
            "machine": facts,
            "frames_per_clip": 1,
            "segments_per_clip": 1,
            "clips_per_part": args.clips_per_part,
            "new": args.new,
            "train_fraction": args.train_fraction,
            "rows": rows,
            "growth": growth,
            "memory_growth": memory,
            "linear": all(v <= scale * 1.5 for v in growth.values()),
        },
    )


if __name__ == "__main__":
    main()
