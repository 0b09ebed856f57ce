"""Faults: a stage killed with SIGKILL at several points, then run again, leaves the same tables
as a run that was never interrupted; the warehouse going away mid-scoring is a clear error and
the re-run completes with nothing lost or doubled; a failed feature write leaves nothing
half-written visible."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.errors import InfrastructureError
from pipeline.features.store import FeatureStore
from pipeline.stages import run_extract, run_ingest, run_score, run_train
from pipeline.training.params import TrainParams
from pipeline.warehouse.database import Warehouse
from tests.feature_factory import temporal_corpus
from tests.media_factory import small_corpus
from tests.processes import start_stpipe, stpipe, stpipe_env

pytestmark = pytest.mark.slow

STAGE_ARGS = {
    "ingest": ["ingest"],
    "extract": ["extract"],
    "train": ["train", "--epochs", "4", "--batch-size", "4", "--patience", "100"],
    "score": ["score", "--run-id", "nightly"],
}
TRAIN_PARAMS = {"epochs": 4, "batch_size": 4, "patience": 100}
#: Columns that differ between two correct runs (when, and by whom).
VOLATILE = {
    "ingested_at",
    "updated_at",
    "first_seen_at",
    "last_seen_at",
    "created_at",
    "promoted_at",
    "reserved_at",
    "scored_at",
    "logical_date",
    "metrics",  # a resumed training sees its batches in another order: checked separately
    "test_accuracy",
}


def _tables(settings: Settings) -> dict[str, Any]:
    """Every pipeline table, without volatile columns, paths relative to the data dir, rows in
    key order; plus each clip's cached features. Numbers compare to within 1e-3: a model or
    VGG-16 run on another batch composition (a re-run resumes with a different batch) differs
    in the last float digits."""
    root = settings.data_dir
    tables: dict[str, Any] = {}
    with Warehouse.connect(settings.warehouse) as wh:
        for table in (
            "media_files",
            "media_sources",
            "model_versions",
            "model_version_reservations",
            "predictions",
            "segment_predictions",
            "work_claims",
        ):
            rows = []
            for row in wh.query(f"SELECT * FROM {table}"):
                clean: dict[str, Any] = {}
                for key, value in row.items():
                    if key in VOLATILE:
                        continue
                    if key == "probabilities":
                        value = json.loads(value)
                    if isinstance(value, str):
                        value = value.replace(root, "<data>")
                    clean[key] = value
                rows.append(clean)
            tables[table] = sorted(rows, key=_identity)
    store = FeatureStore.from_settings(settings)
    segments = store.read_segments()
    tables["features"] = {
        clip_id: [{s: seg.stream(s).tolist() for s in ("video", "audio")} for seg in rows]
        for clip_id, rows in sorted(segments.items())
    }
    tables["feature_problems"] = store.verify()["problems"] if segments else []
    return tables


def _identity(row: dict[str, Any]) -> str:
    """A row's sort key: its values that are not numbers."""
    return json.dumps(
        {k: v for k, v in row.items() if not isinstance(v, float | dict)},
        sort_keys=True,
        default=str,
    )


def _first_difference(actual: Any, expected: Any) -> str:
    if isinstance(actual, list) and isinstance(expected, list):
        if len(actual) != len(expected):
            return f"{len(actual)} rows instead of {len(expected)}"
        for got, want in zip(actual, expected, strict=True):
            if got != want:
                return f"got {str(got)[:600]} want {str(want)[:600]}"
    return f"got {str(actual)[:600]} want {str(expected)[:600]}"


def _approx(value: Any) -> Any:
    """``value`` with every float replaced by ``pytest.approx`` (1e-3), recursively."""
    if isinstance(value, float):
        return pytest.approx(value, abs=1e-3)
    if isinstance(value, dict):
        return {k: _approx(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_approx(v) for v in value]
    return value


def _prepare(settings: Settings, source: Path, stages: list[str]) -> None:
    """Copy the corpus into the landing folder and run ``stages`` in this process, as the CLI
    would."""
    shutil.copytree(source, settings.landing_root, dirs_exist_ok=True)
    for stage in stages:
        if stage == "ingest":
            run_ingest(settings)
        elif stage == "extract":
            run_extract(settings)
        elif stage == "train":
            run_train(settings, TrainParams(seed=settings.seed, **TRAIN_PARAMS))


class _Output:
    """Collects a process's output lines as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line)

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)


def _count(path: Path, pattern: str) -> int:
    return len(list(path.glob(pattern))) if path.exists() else 0


def _rows(settings: Settings, table: str) -> int:
    with contextlib.suppress(Exception), Warehouse.connect(settings.warehouse, migrate=False) as wh:
        return int(wh.query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"])
    return 0


# Kill points per stage: a name, and when to kill (given the settings and the process output).
KillPoint = Callable[[Settings, _Output], bool]


def _kill_points(stage: str) -> dict[str, KillPoint]:
    def features(s: Settings) -> Path:
        return Path(s.features_root) / s.settings_hash

    points: dict[str, dict[str, KillPoint]] = {
        "ingest": {
            "copying the first file": lambda s, o: _count(Path(s.staging_root), ".tmp-*") > 0,
            "a few files in": lambda s, o: _count(Path(s.media_root), "*/*") >= 3,
            "most files in": lambda s, o: _rows(s, "media_sources") >= 12,
        },
        "extract": {
            "encoding frames": lambda s, o: o.saw("frame encoder ready"),
            "between TFRecord and Parquet": lambda s, o: (
                _count(features(s), "tfrecords/part-*") > _count(features(s), "parquet/part-*")
            ),
        },
        "train": {
            "after the first epoch": lambda s, o: _count(Path(s.runs_root), "*/epoch-*.keras") > 0,
            "saving the version": lambda s, o: _count(Path(s.models_root), ".tmp-*") > 0,
        },
        "score": {
            "first chunk written": lambda s, o: _rows(s, "predictions") >= 2,
            "half the clips scored": lambda s, o: _rows(s, "predictions") >= 9,
        },
    }
    return points[stage]


def _kill_when(settings: Settings, stage: str, point: KillPoint) -> bool:
    """Start the stage, SIGKILL it as soon as ``point`` holds; True if it was still running."""
    process = start_stpipe(settings, *STAGE_ARGS[stage])
    output = _Output(process)
    deadline = time.monotonic() + 180
    while process.poll() is None and time.monotonic() < deadline:
        if point(settings, output):
            process.send_signal(signal.SIGKILL)
            process.wait(30)
            return process.returncode == -signal.SIGKILL
        time.sleep(0.002)
    process.wait(30)
    assert process.returncode == 0, "".join(output.lines)[-3000:]
    return False


@pytest.fixture(scope="module")
def source_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated corpus, copied into every run's landing folder (identical bytes)."""
    root = tmp_path_factory.mktemp("corpus")
    small_corpus(root)
    return root


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("stage", ["ingest", "extract", "train", "score"])
def test_a_stage_killed_at_any_point_then_rerun_leaves_the_tables_of_a_clean_run(
    stage: str, source_media: Path, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    order = list(STAGE_ARGS)
    before = order[: order.index(stage)]
    # One data dir (paths in the tables are absolute): the state before the stage is saved,
    # the clean run and every killed-then-rerun attempt start from it.
    settings = make_settings(data_dir=str(tmp_path / "data"), score_chunk_clips=2, ingest_workers=1)
    _prepare(settings, source_media, before)
    backup = tmp_path / "before"
    shutil.copytree(settings.data_dir, backup)
    stpipe(settings, *STAGE_ARGS[stage], timeout=300)
    expected = _approx(_tables(settings))
    reference_metrics = _metrics(settings)

    killed_midway = []
    for name, point in _kill_points(stage).items():
        shutil.rmtree(settings.data_dir)
        shutil.copytree(backup, settings.data_dir)
        if _kill_when(settings, stage, point):
            killed_midway.append(name)
        stpipe(settings, *STAGE_ARGS[stage], timeout=300)
        actual = _tables(settings)
        for table, rows in expected.items():
            assert actual[table] == rows, (
                f"{stage} killed at {name!r}, then rerun: {table} differs: "
                f"{_first_difference(actual[table], rows)}"
            )
        if stage == "train":  # resumed, it saw its batches in another order: as good
            assert abs(_metrics(settings)["accuracy"] - reference_metrics["accuracy"]) <= 0.35
    print(f"{stage}: killed mid-run at {killed_midway} of {list(_kill_points(stage))}")
    assert killed_midway, f"no kill point of {stage} landed before the stage finished"


def _metrics(settings: Settings) -> dict[str, Any]:
    with Warehouse.connect(settings.warehouse) as wh:
        models = wh.models()
    return models[0].metrics if models else {}


# The warehouse going away ------------------------------------------------------------------


@dataclass
class PrivateServer:
    """A PostgreSQL server of the test's own (initdb + pg_ctl), which the test may stop."""

    url: str
    data: Path
    pg_ctl: list[str]

    def stop(self) -> None:
        subprocess.run([*self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"], check=True)

    def start(self) -> None:
        subprocess.run([*self.pg_ctl, "-D", str(self.data), "-w", "start"], check=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivateServer]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb") or ""]
    if not found[-1]:
        pytest.fail("initdb is not installed; this test starts a PostgreSQL server of its own")
    bin_dir = Path(found[-1]).parent
    # initdb refuses to run as root: run the server as the postgres user then.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="stpipe-pg-", dir="/tmp"))
    os.chmod(root, 0o755)
    if as_user:
        shutil.chown(root, "postgres", "postgres")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = root / "data"
    subprocess.run(
        [
            *as_user,
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [*as_user, str(bin_dir / "pg_ctl"), "-o", options, "-l", str(root / "log")]
    server = PrivateServer(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", data, pg_ctl)
    server.start()
    try:
        yield server
    finally:
        subprocess.run([*pg_ctl, "-D", str(data), "-m", "immediate", "stop"], check=False)
        shutil.rmtree(root, ignore_errors=True)


class _StopServerAfterFirstChunk:
    """A progress reporter that stops the warehouse's server once the first chunk is saved."""

    def __init__(self, server: PrivateServer) -> None:
        self.server = server
        self.chunks = 0

    def start(self, description: str, total: int, unit: str = "items") -> None:
        pass

    def advance(self, items: int = 1, frames: int = 0) -> None:
        self.chunks += 1
        if self.chunks == 1:
            self.server.stop()

    def finish(self) -> None:
        pass


@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_warehouse_lost_mid_scoring_is_a_clear_error_and_the_rerun_completes(
    private_postgres: PrivateServer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(warehouse_url=private_postgres.url, score_chunk_clips=10)
    with Warehouse.connect(settings.warehouse) as wh:
        temporal_corpus(wh, FeatureStore.from_settings(settings), per_class=20, unlabelled=10)
    run_train(settings, TrainParams(epochs=2, batch_size=16, seed=settings.seed))

    with pytest.raises(InfrastructureError, match="scoring stopped after 10 clips: lost the"):
        run_score(settings, run_id="first", progress=_StopServerAfterFirstChunk(private_postgres))
    down = stpipe(settings, "score", check=False)
    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert "cannot open the warehouse" in down.stderr and "server is up" in down.stderr

    private_postgres.start()
    summary = run_score(settings, run_id="second")
    with Warehouse.connect(settings.warehouse) as wh:
        clips = wh.clips()
        rows = wh.query("SELECT clip_id, run_id, predicted_label FROM predictions")
        segments = wh.query("SELECT clip_id FROM segment_predictions")
        production = wh.production_model()
        assert production is not None
        from pipeline.registry.gate import clip_predictions

        direct = clip_predictions(production, clips, settings.features_root)
    assert (summary.already_scored, summary.scored) == (10, len(clips) - 10)
    assert sorted(r["clip_id"] for r in rows) == sorted(c.clip_id for c in clips)  # once each
    assert len(segments) == len(clips)
    assert sum(r["run_id"] == "first" for r in rows) == 10  # the rows saved before the loss stay
    for row in rows:  # and they are what the model says, like every other row
        best = int(np.argmax(direct[row["clip_id"]]))
        assert row["predicted_label"] == production.class_names[best]


# A failed write ----------------------------------------------------------------------------


def _stpipe_with_file_size_limit(
    settings: Settings, limit_bytes: int, *args: str
) -> subprocess.CompletedProcess[str]:
    """``stpipe ARGS`` with RLIMIT_FSIZE set: any write past ``limit_bytes`` fails with EFBIG,
    as on a full disk or an exhausted quota (Python ignores SIGXFSZ)."""
    limited = (
        f"import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes},"
        f" {limit_bytes})); sys.argv = ['stpipe', *{list(args)!r}];"
        " from pipeline.cli.app import main; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", limited],
        env=stpipe_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_a_failed_feature_write_leaves_nothing_half_written(
    source_media: Path, make_settings: Callable[..., Settings], postgres_url: str
) -> None:
    # The warehouse is on PostgreSQL so that the file-size limit below (RLIMIT_FSIZE: writes
    # past 60 kB fail with EFBIG) hits the feature parts only, not a local database file.
    settings = make_settings(warehouse_url=postgres_url)
    _prepare(settings, source_media, ["ingest"])
    result = _stpipe_with_file_size_limit(settings, 60_000, "extract")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cannot write feature part" in result.stderr and "Traceback" not in result.stderr
    store = FeatureStore.from_settings(settings)
    assert store.parquet_parts() == [] and store.tfrecord_parts() == []
    leftovers = [p for p in Path(store.folder).rglob("*") if p.is_file() and ".tmp-" in p.name]
    assert leftovers == []
    with Warehouse.connect(settings.warehouse) as wh:
        assert wh.query("SELECT * FROM work_claims") == []  # released on the way out
        ok = {c.clip_id for c in wh.clips()}
    stpipe(settings, "extract")
    assert store.clip_ids() == ok and store.verify()["problems"] == []


@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_a_full_disk_stops_ingest_with_one_clear_line_and_the_rerun_completes(
    source_media: Path, make_settings: Callable[..., Settings], postgres_url: str
) -> None:
    settings = make_settings(warehouse_url=postgres_url, ingest_workers=1)
    shutil.copytree(source_media, settings.landing_root)
    result = _stpipe_with_file_size_limit(settings, 20_000, "ingest")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ingest stopped: cannot write to disk (File too large" in result.stderr
    assert "Traceback" not in result.stderr
    with Warehouse.connect(settings.warehouse) as wh:
        partial = wh.query("SELECT status, error FROM media_files")
    assert len(partial) < 20  # it stopped...
    assert not any("too large" in (r["error"] or "") for r in partial)  # ...blaming no file
    stpipe(settings, "ingest")
    with Warehouse.connect(settings.warehouse) as wh:
        statuses = wh.query("SELECT status, COUNT(*) AS n FROM media_files GROUP BY 1 ORDER BY 1")
    assert statuses == [{"status": "ok", "n": 19}, {"status": "quarantined", "n": 1}]
