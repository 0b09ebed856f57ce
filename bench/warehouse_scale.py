"""Benchmark: the analyst views at the size of a real warehouse, and scoring 100,000 cached clips.

Part 1, views. The same synthetic warehouse is written to a fresh SQLite file and to a fresh
PostgreSQL database (created on the server the tests use, dropped at the end): 100,000 clips
(1% quarantined, 30% labelled, ingested over 90 days), 10 model versions (v0009 in production
after a rollback from v0010), 1,000,000 ``predictions`` rows (every version scored every clip,
each version over its own 9 nights), 60,000 ``segment_predictions`` rows (2,000 clips of three
segments), the versions' ``model_training_clips`` and 5,000 ``label_feedback`` rows.
Predictions and segments are written through the scoring path's own writers
(``Warehouse.upsert_predictions`` / ``upsert_segment_predictions``: ``INSERT ... ON CONFLICT``
with executemany, 20,000 rows a transaction); the other tables with plain executemany INSERTs.
Both databases are then ``ANALYZE``d, as a warehouse that has lived a while would be. Every
view in the schema is queried ``--runs`` times after one warm-up run, two ways: the whole view
(``SELECT COUNT(*) FROM (SELECT * FROM view) t``) and a typical filtered query (one clip id, or
the last 7 days, or the first 50 rows); p50 and p95 (nearest rank) are printed per database.

Part 2, scoring. ``--score-clips`` clips (default 100,000) with synthetic cached features (one
segment of 3-6 frames x 512 floats each, written to the feature store as the extractor would)
in a SQLite warehouse; a head trained for 1 epoch on 2,000 labelled ones; then ``run_score``
(the function behind ``stpipe score`` and the nightly DAG) scores them all in chunks of
``score_chunk_clips``, each chunk written in one transaction. Throughput in clips/s, and the
resident memory (sampled every 0.2 s) at the start, middle and end of scoring and its peak.

    .venv/bin/python bench/warehouse_scale.py [--clips 100000] [--runs 3] [--score-clips 100000] [--skip-views | --skip-scoring]

Other processes share the machine (the numbers were measured with other engineers' tests
running): compare the databases and the views with each other, not with another machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from common import RESULTS, header, machine, save

CLASSES = ("colours_forward", "colours_reverse", "tones_rising", "tones_falling")
REASONS = (
    "cannot decode: truncated file",
    "duration 20000 s is over PIPELINE_MAX_DURATION_SECONDS",
    "no audio or video stream",
    "frame 8192x8192 is over PIPELINE_MAX_FRAME_PIXELS",
)
DAYS = 90
CHUNK = 20_000
PG_ADMIN_URL = os.environ.get(
    "STPIPE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def clip_id(index: int) -> str:
    return hashlib.sha256(f"scale-{index}".encode()).hexdigest()


# Part 1: the views --------------------------------------------------------------------------


class Corpus:
    """The synthetic warehouse's rows, generated in chunks (never all in memory)."""

    def __init__(self, clips: int, versions: int, start: datetime) -> None:
        from pipeline.ingest.register import split_for

        self.clips, self.versions, self.start = clips, versions, start
        self.ids = [clip_id(i) for i in range(clips)]
        self.splits = [split_for(c) for c in self.ids]
        rng = np.random.default_rng(0)
        self.labelled = rng.random(clips) < 0.3
        self.truth = rng.integers(0, len(CLASSES), clips)
        self.quarantined = rng.random(clips) < 0.01
        self.ingest_day = np.arange(clips) * DAYS // clips
        self.long = np.arange(clips) % 50 == 0  # 2% of clips: three segments

    def version(self, v: int) -> str:
        return f"v{v:04d}"

    def first_night(self, v: int) -> int:
        """Each version scores over its own nights: v0001 days 0-8, v0002 days 9-17, ..."""
        return (v - 1) * DAYS // self.versions

    def media_rows(self) -> Iterator[list[dict[str, Any]]]:
        for lo in range(0, self.clips, CHUNK):
            rows = []
            for i in range(lo, min(lo + CHUNK, self.clips)):
                at = self.start + timedelta(days=int(self.ingest_day[i]), seconds=i % 86400)
                bad = bool(self.quarantined[i])
                label = CLASSES[self.truth[i]] if self.labelled[i] else None
                rows.append(
                    {
                        "clip_id": self.ids[i],
                        "uri": f"/landing/batch{i // 1000}/clip{i}.mp4",
                        "media_uri": None if bad else f"/media/{self.ids[i]}.mp4",
                        "modality": ("video", "audio")[i % 2],
                        "label": label,
                        "label_source": "ingest" if label else None,
                        "split": self.splits[i],
                        "status": "quarantined" if bad else "ok",
                        "error": REASONS[i % len(REASONS)] if bad else None,
                        "size_bytes": 1_000_000 + i,
                        "duration_seconds": 30.0 if self.long[i] else 8.0,
                        "ingested_at": at,
                        "updated_at": at,
                    }
                )
            yield rows

    def model_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "model_version": self.version(v),
                "model_uri": f"/models/{self.version(v)}",
                "settings_hash": "h",
                "fingerprint": f"f{v}",
                "class_names": list(CLASSES),
                "metrics": {"accuracy": 0.9},
                "streams": ["video", "audio"],
            }
            for v in range(1, self.versions + 1)
        ]

    def training_rows(self) -> Iterator[list[dict[str, Any]]]:
        """Each version learnt from the labelled clips ingested before its first night."""
        for v in range(1, self.versions + 1):
            cutoff = max(self.first_night(v), 1)
            picked = np.flatnonzero(self.labelled & (self.ingest_day < cutoff))
            for lo in range(0, len(picked), CHUNK):
                yield [
                    {
                        "model_version": self.version(v),
                        "clip_id": self.ids[i],
                        "split": self.splits[i],
                        "label": CLASSES[self.truth[i]],
                    }
                    for i in picked[lo : lo + CHUNK]
                ]

    def prediction_rows(
        self, v: int
    ) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
        """(clip rows, segment rows) of version ``v``, chunk by chunk."""
        rng = np.random.default_rng(v)
        nights = max(DAYS // self.versions, 1)
        for lo in range(0, self.clips, CHUNK):
            hi = min(lo + CHUNK, self.clips)
            n = hi - lo
            # Right 85% of the time (a little less for later versions: something to drift).
            right = rng.random(n) < 0.85 - 0.01 * v
            favoured = np.where(right, self.truth[lo:hi], rng.integers(0, len(CLASSES), n))
            alpha = np.ones((n, len(CLASSES)))
            alpha[np.arange(n), favoured] = rng.uniform(1.5, 12.0, n)
            draws = rng.gamma(alpha)  # Dirichlet rows: normalised gamma draws
            probs = np.round(draws / draws.sum(axis=1, keepdims=True), 6)
            clips, segments = [], []
            for k in range(n):
                i = lo + k
                night = self.start + timedelta(days=self.first_night(v) + i % nights, hours=2)
                p = {c: float(x) for c, x in zip(CLASSES, probs[k], strict=True)}
                best = int(np.argmax(probs[k]))
                row = {
                    "clip_id": self.ids[i],
                    "model_version": self.version(v),
                    "predicted_label": CLASSES[best],
                    "confidence": float(probs[k, best]),
                    "probabilities": p,
                    "scored_at": night + timedelta(minutes=30, seconds=k % 3600),
                    "run_id": f"scheduled__{night:%Y-%m-%dT%H:%M:%S}",
                    "logical_date": night,
                    "n_segments": 3 if self.long[i] else 1,
                }
                clips.append(row)
                if self.long[i]:
                    for s in range(3):
                        segments.append(
                            {
                                **row,
                                "segment_index": s,
                                "start_seconds": 10.0 * s,
                                "end_seconds": 10.0 * (s + 1),
                                "predicted_label": CLASSES[(best + (s == 2)) % len(CLASSES)],
                            }
                        )
            yield clips, segments

    def feedback_rows(self, count: int) -> list[dict[str, Any]]:
        picked = np.flatnonzero(~self.quarantined)[1::19][:count]
        return [
            {
                "id": n + 1,
                "clip_id": self.ids[i],
                "label": CLASSES[(self.truth[i] + n) % len(CLASSES)],
                "previous_label": CLASSES[self.truth[i]] if self.labelled[i] else None,
                "reviewer": ("ana", "bo", "chen")[n % 3],
                "note": None,
                "created_at": self.start + timedelta(days=DAYS * n / count),
            }
            for n, i in enumerate(picked)
        ]


def _insert(conn: sa.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    if rows:
        names = list(rows[0])
        conn.execute(
            sa.text(
                f"INSERT INTO {table} ({', '.join(names)})"
                f" VALUES ({', '.join(':' + n for n in names)})"
            ),
            rows,
        )


def load_warehouse(url: str, corpus: Corpus) -> dict[str, Any]:
    """Write the corpus into the warehouse at ``url``; return rows and seconds per table."""
    from pipeline.warehouse.database import Warehouse

    written: dict[str, dict[str, float]] = {}

    def note(table: str, rows: int, seconds: float) -> None:
        entry = written.setdefault(table, {"rows": 0, "seconds": 0.0})
        entry["rows"] += rows
        entry["seconds"] += seconds

    with Warehouse.connect(url) as wh:
        for rows in corpus.media_rows():
            started = time.perf_counter()
            with wh.engine.begin() as conn:
                _insert(conn, "media_files", rows)
            note("media_files", len(rows), time.perf_counter() - started)
        for row in corpus.model_rows():
            wh.register_model(**row)
        wh.promote_model(corpus.version(corpus.versions))
        wh.promote_model(corpus.version(corpus.versions - 1))  # last night's rollback
        for rows in corpus.training_rows():
            started = time.perf_counter()
            with wh.engine.begin() as conn:
                _insert(conn, "model_training_clips", rows)
            note("model_training_clips", len(rows), time.perf_counter() - started)
        for v in range(1, corpus.versions + 1):
            for clips, segments in corpus.prediction_rows(v):
                started = time.perf_counter()
                wh.upsert_segment_predictions(segments)
                note("segment_predictions", len(segments), time.perf_counter() - started)
                started = time.perf_counter()
                wh.upsert_predictions(clips)
                note("predictions", len(clips), time.perf_counter() - started)
            print(f"    {corpus.version(v)} written", flush=True)
        feedback = corpus.feedback_rows(5000)
        started = time.perf_counter()
        with wh.engine.begin() as conn:
            _insert(conn, "label_feedback", feedback)
        note("label_feedback", len(feedback), time.perf_counter() - started)
        started = time.perf_counter()
        with wh.engine.connect() as conn:
            conn.execute(sa.text("ANALYZE"))
            conn.commit()
        note("ANALYZE", 0, time.perf_counter() - started)
    return {
        table: {**entry, "rows_per_s": entry["rows"] / entry["seconds"] if entry["rows"] else None}
        for table, entry in written.items()
    }


def filtered_query(view: str, columns: list[str]) -> tuple[str, str]:
    """A typical question asked of ``view``: (what it asks, the SQL with :clip / :since)."""
    if view == "review_queue":
        return "first 50 rows", f"SELECT * FROM {view} LIMIT 50"
    if "clip_id" in columns:
        return "one clip", f"SELECT * FROM {view} WHERE clip_id = :clip"
    if "day" in columns:
        return "last 7 days", f"SELECT * FROM {view} WHERE day >= :since"
    return "first 50 rows", f"SELECT * FROM {view} LIMIT 50"


def time_query(
    engine: sa.Engine, sql: str, params: dict[str, Any], runs: int, timeout_s: float
) -> dict[str, Any]:
    """One warm-up run, then ``runs`` timed runs (fewer when one run takes over 20 s). A run
    over ``timeout_s`` is cancelled and the query recorded as timed out."""
    times = []
    rows: list[Any] = []
    for attempt in range(runs + 1):
        started = time.perf_counter()
        try:
            with engine.connect() as conn, _statement_time_limit(conn, timeout_s):
                rows = list(conn.execute(sa.text(sql), params))
        except sa.exc.DBAPIError:
            if time.perf_counter() - started < timeout_s:
                raise
            return {"rows": None, "runs": len(times), "timed_out_s": timeout_s}
        elapsed = time.perf_counter() - started
        if attempt:
            times.append(elapsed)
        if elapsed > 20 and len(times) >= 2:
            break
    ordered = sorted(times)
    return {
        "rows": len(rows),
        "first_value": rows[0][0] if rows else None,
        "runs": len(times),
        "p50_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[min(len(ordered) - 1, int(np.ceil(0.95 * len(ordered))) - 1)],
    }


@contextmanager
def _statement_time_limit(conn: sa.Connection, timeout_s: float) -> Iterator[None]:
    """Cancel this connection's statements after ``timeout_s``: PostgreSQL's statement_timeout,
    SQLite's progress handler (which interrupts the statement when it returns non-zero)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(f"SET statement_timeout = {int(timeout_s * 1000)}"))
        try:
            yield
        finally:
            conn.execute(sa.text("RESET statement_timeout"))
        return
    deadline = time.perf_counter() + timeout_s
    raw = conn.connection.driver_connection
    raw.set_progress_handler(lambda: int(time.perf_counter() > deadline), 100_000)
    try:
        yield
    finally:
        raw.set_progress_handler(None, 100_000)


def _ms(entry: dict[str, Any], key: str) -> str:
    if "timed_out_s" in entry:
        return f"> {entry['timed_out_s']:g} s"
    return f"{entry[key]:.1f}"


def query_views(url: str, corpus: Corpus, runs: int, timeout_s: float) -> dict[str, dict[str, Any]]:
    from pipeline.warehouse.database import Warehouse

    with Warehouse.connect(url) as wh:
        inspector = sa.inspect(wh.engine)
        views = sorted(inspector.get_view_names())
        last = corpus.start + timedelta(days=DAYS)
        since: Any = (last - timedelta(days=7)).date()
        if wh.dialect == "sqlite":
            since = since.isoformat()  # SQLite's DATE() is 'YYYY-MM-DD' text
        params = {"clip": corpus.ids[100], "since": since}
        results = {}
        for view in views:
            columns = [c["name"] for c in inspector.get_columns(view)]
            what, sql = filtered_query(view, columns)
            whole_sql = f"SELECT COUNT(*) FROM (SELECT * FROM {view}) t"
            whole = time_query(wh.engine, whole_sql, {}, runs, timeout_s)
            whole["rows"] = whole.pop("first_value", None)  # the COUNT(*)
            used = {k: v for k, v in params.items() if f":{k}" in sql}
            filtered = {"what": what, **time_query(wh.engine, sql, used, runs, timeout_s)}
            results[view] = {"whole": whole, "filtered": filtered}
            print(
                f"    {view:<28} whole p50 {_ms(whole, 'p50_ms'):>10} ms   {what:<13}"
                f" p50 {_ms(filtered, 'p50_ms'):>10} ms",
                flush=True,
            )
    return results


def postgres_database() -> tuple[str, str]:
    """A fresh database on the tests' PostgreSQL server: (its URL, its name)."""
    name = f"stpipe_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name)
    return url.render_as_string(hide_password=False), name


def drop_postgres_database(name: str) -> None:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def bench_views(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    start = datetime(2026, 8, 1, tzinfo=UTC)
    corpus = Corpus(args.clips, args.versions, start)
    results: dict[str, Any] = {}
    pg_url, pg_name = postgres_database()
    try:
        for database, url in (("sqlite", f"sqlite:///{work / 'scale.db'}"), ("postgresql", pg_url)):
            header(f"{database}: writing {args.clips} clips x {args.versions} versions")
            load = load_warehouse(url, corpus)
            for table, entry in load.items():
                rate = f"{entry['rows_per_s']:,.0f} rows/s" if entry["rows_per_s"] else ""
                print(f"    {table:<22} {entry['rows']:>9,} rows {entry['seconds']:7.1f} s {rate}")
            header(f"{database}: querying every view ({args.runs} runs after a warm-up)")
            views = query_views(url, corpus, args.runs, args.query_timeout)
            results[database] = {"load": load, "views": views}
    finally:
        drop_postgres_database(pg_name)
    return results


# Part 2: scoring ----------------------------------------------------------------------------


class RssSampler:
    """Resident set size of this process every ``interval`` seconds, in a thread."""

    def __init__(self, interval: float = 0.2) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    @staticmethod
    def rss_mib() -> float:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self.rss_mib()))
            self._stop.wait(interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


class ClipClock:
    """A :class:`pipeline.progress.Progress` noting when each chunk of clips is done."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, int]] = []
        self.total = 0

    def start(self, description: str, total: int, unit: str = "items") -> None:
        self.total = total
        self.marks = [(time.perf_counter(), 0)]

    def advance(self, items: int = 1, frames: int = 0) -> None:
        self.marks.append((time.perf_counter(), self.marks[-1][1] + items))

    def finish(self) -> None:
        pass


def write_cached_clips(settings: Any, clips: int, labelled: int) -> float:
    """``clips`` ok clips with cached features (``labelled`` of them labelled 'up'/'down', the
    temporal classes of tests/feature_factory.py); return the seconds it took."""
    from pipeline.features.store import FeatureStore, SegmentFeatures
    from pipeline.ingest.register import split_for
    from pipeline.warehouse.database import Warehouse, utc_now

    started = time.perf_counter()
    rng = np.random.default_rng(0)
    prototypes = rng.gamma(1.0, 1.0, size=(4, 512)).astype(np.float32)
    store = FeatureStore.from_settings(settings)
    empty = np.zeros((0, 512), np.float32)
    now = utc_now()
    with Warehouse.connect(settings.warehouse) as wh:
        for lo in range(0, clips, 1000):
            rows, segments = [], []
            for i in range(lo, min(lo + 1000, clips)):
                cid = hashlib.sha256(f"score-{i}".encode()).hexdigest()
                label = ("up", "down")[i % 2]
                order = [0, 1, 2, 3] if label == "up" else [3, 2, 1, 0]
                length = int(rng.integers(3, 7))
                picks = np.array(order)[np.linspace(0, 3.999, length).astype(int)]
                noise = rng.normal(0, 0.3, size=(length, 512)).astype(np.float32)
                frames = np.maximum(prototypes[picks] + noise, 0).astype(np.float32)
                segments.append(
                    SegmentFeatures(cid, 0, 1, 0.0, 1.0, "video", {"video": frames, "audio": empty})
                )
                rows.append(
                    {
                        "clip_id": cid,
                        "uri": f"/landing/{cid[:8]}",
                        "media_uri": f"/media/{cid}",
                        "modality": "video",
                        "label": label if i < labelled else None,
                        "label_source": "ingest" if i < labelled else None,
                        "split": split_for(cid),
                        "status": "ok",
                        "size_bytes": 1,
                        "duration_seconds": 1.0,
                        "ingested_at": now,
                        "updated_at": now,
                    }
                )
            store.write_part(segments)
            with wh.engine.begin() as conn:
                _insert(conn, "media_files", rows)
    return time.perf_counter() - started


def bench_scoring(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from pipeline.config import load_settings
    from pipeline.stages import run_score, run_train
    from pipeline.training.params import TrainParams

    settings = load_settings(
        data_dir=str(work / "scoring"), cnn_weights="none", image_size=32, max_frames=8
    )
    header(f"scoring: writing {args.score_clips} cached clips")
    write_s = write_cached_clips(settings, args.score_clips, labelled=2000)
    print(f"    written in {write_s:.1f} s")
    header("scoring: training a head for 1 epoch on 2,000 labelled clips")
    started = time.perf_counter()
    trained = run_train(settings, TrainParams(epochs=1, seed=settings.seed), promote=True)
    train_s = time.perf_counter() - started
    print(f"    {trained.model_version} in {train_s:.1f} s")
    header(f"scoring {args.score_clips} clips (chunks of {settings.score_chunk_clips})")
    clock = ClipClock()
    with RssSampler() as sampler:
        started = time.perf_counter()
        summary = run_score(
            settings, run_id="bench-scale", logical_date=datetime.now(UTC), progress=clock
        )
        score_s = time.perf_counter() - started
        time.sleep(0.3)  # one more sample after the end
    begin, end = clock.marks[0][0], clock.marks[-1][0]
    during = [rss for t, rss in sampler.samples if begin <= t <= end] or [0.0]
    halfway = next(t for t, done in clock.marks if done >= clock.total / 2)
    at_middle = min(sampler.samples, key=lambda s: abs(s[0] - halfway))[1]
    at_start = min(sampler.samples, key=lambda s: abs(s[0] - begin))[1]
    at_end = min(sampler.samples, key=lambda s: abs(s[0] - end))[1]
    loop_s = end - begin
    tenth = max(len(clock.marks) // 10, 1)
    rate = [
        (clock.marks[b][1] - clock.marks[a][1]) / (clock.marks[b][0] - clock.marks[a][0])
        for a, b in ((0, tenth), (len(clock.marks) - 1 - tenth, len(clock.marks) - 1))
    ]
    result = {
        "clips": args.score_clips,
        "scored": summary.scored,
        "chunk_clips": settings.score_chunk_clips,
        "write_features_s": write_s,
        "train_s": train_s,
        "score_s": score_s,
        "score_loop_s": loop_s,
        "clips_per_s": summary.scored / score_s,
        "clips_per_s_loop": summary.scored / loop_s,
        "clips_per_s_first_tenth": rate[0],
        "clips_per_s_last_tenth": rate[1],
        "rss_mib": {
            "before_run_score": sampler.samples[0][1],
            "start": at_start,
            "middle": at_middle,
            "end": at_end,
            "peak_while_scoring": max(during),
        },
        "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(
        f"    {summary.scored} clips in {score_s:.1f} s = {result['clips_per_s']:.0f} clips/s"
        f" ({result['clips_per_s_loop']:.0f} clips/s in the chunk loop, after loading the model"
        " and listing the clips)"
    )
    rss = result["rss_mib"]
    print(
        f"    RSS MiB: start {rss['start']:.0f}, middle {rss['middle']:.0f}, end {rss['end']:.0f},"
        f" peak while scoring {rss['peak_while_scoring']:.0f}"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per query")
    parser.add_argument("--query-timeout", type=float, default=120.0, help="seconds per query")
    parser.add_argument("--score-clips", type=int, default=100_000)
    parser.add_argument("--skip-views", action="store_true")
    parser.add_argument("--skip-scoring", action="store_true")
    args = parser.parse_args()
    # Killed (SIGTERM): still drop the PostgreSQL database and the temporary folder.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.WARNING)
    header("warehouse at scale")
    facts = machine()
    load = os.getloadavg()
    print(f"    load average at start: {load[0]:.1f} (other processes share these cores)")
    work = Path(tempfile.mkdtemp(prefix="stpipe-scale-"))
    result: dict[str, Any] = {
        "machine": facts,
        "load_average_at_start": load[0],
        "clips": args.clips,
        "model_versions": args.versions,
        "prediction_rows": args.clips * args.versions,
        "runs": args.runs,
        "measured_on": date.today().isoformat(),
    }
    # A part skipped keeps its figures from the last run (each part is saved when done).
    previous = RESULTS / "warehouse_scale.json"
    if previous.exists():
        last = json.loads(previous.read_text())
        result.update({k: last[k] for k in ("databases", "scoring") if k in last})
        if args.skip_views:  # the views' figures and the conditions they were measured in
            kept = ("clips", "model_versions", "prediction_rows", "runs", "load_average_at_start")
            result.update({k: last[k] for k in kept if k in last})
    try:
        if not args.skip_views:
            result["databases"] = bench_views(args, work)
            save("warehouse_scale", {**result, "load_average_at_end": os.getloadavg()[0]})
        if not args.skip_scoring:
            # One entry per corpus size: throughput against the size of the feature store.
            runs = result.get("scoring", {})
            runs = {str(runs["clips"]): runs} if "clips" in runs else runs
            result["scoring"] = {**runs, str(args.score_clips): bench_scoring(args, work)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["load_average_at_end"] = os.getloadavg()[0]
    header("result")
    for database, entry in result.get("databases", {}).items():
        print(f"\n{database}: view | rows | whole p50 / p95 ms | filtered | p50 / p95 ms")
        for view, r in entry["views"].items():
            w, f = r["whole"], r["filtered"]
            rows = "?" if w["rows"] is None else f"{w['rows']:,}"
            print(
                f"  {view:<28} {rows:>9} {_ms(w, 'p50_ms'):>9} {_ms(w, 'p95_ms'):>9}"
                f"   {f['what']:<13} {_ms(f, 'p50_ms'):>9} {_ms(f, 'p95_ms'):>9}"
            )
    save("warehouse_scale", result)


if __name__ == "__main__":
    main()
