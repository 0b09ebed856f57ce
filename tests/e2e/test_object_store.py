"""The whole CLI flow with the data root in an S3 bucket (a local moto S3 server): media,
features (Parquet through fsspec, TFRecords read through tensorflow-io's s3 file system) and
models live in the bucket; the warehouse stays in SQLite. Every command must exit 0 (the
tensorflow-io exit abort is contained). A training killed midway resumes from its checkpoints
in the bucket when started again on a fresh machine."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.features.store import FeatureStore
from pipeline.warehouse.database import Warehouse
from tests.feature_factory import temporal_corpus
from tests.media_factory import colour_video, tone_file
from tests.model_files import keras_file_weights
from tests.processes import stpipe_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[dict[str, str]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,  # boto3 / s3fs
        "S3_ENDPOINT": endpoint,  # tensorflow-io
        "S3_USE_HTTPS": "0",
        "S3_VERIFY_SSL": "0",
    }
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    else:
        server.kill()
        pytest.fail("the moto S3 server did not start")
    try:
        yield env
    finally:
        server.terminate()
        server.wait(timeout=10)


def _other_host(s3_endpoint: dict[str, str]) -> Any:
    """An S3 file system of its own, as another host has."""
    import s3fs

    return s3fs.S3FileSystem(
        client_kwargs={"endpoint_url": s3_endpoint["AWS_ENDPOINT_URL"]},
        key="test",
        secret="test",
        skip_instance_cache=True,
    )


@pytest.fixture
def s3_bucket(s3_endpoint: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket, with this process's environment pointing at the S3 server."""
    import fsspec

    for key, value in s3_endpoint.items():
        monkeypatch.setenv(key, value)
    fsspec.AbstractFileSystem.clear_instance_cache()
    bucket = f"stpipe-{uuid.uuid4().hex[:8]}"
    _other_host(s3_endpoint).mkdir(bucket)
    return bucket


def test_of_writers_racing_to_create_one_s3_object_exactly_one_wins(s3_bucket: str) -> None:
    """What makes the deployment's ``auto`` precision one decision on an object store too: a
    conditional PUT, refused once the key exists."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from pipeline import storage

    for attempt in range(5):
        uri = f"s3://{s3_bucket}/features/{attempt}/precision.json"
        start = threading.Barrier(8)

        def create(i: int, uri: str = uri, start: threading.Barrier = start) -> bool:
            start.wait()
            return storage.create_exclusive(uri, f"writer {i}".encode())

        with ThreadPoolExecutor(8) as pool:
            won = list(pool.map(create, range(8)))
        assert won.count(True) == 1, won
        assert storage.read_bytes(uri) == f"writer {won.index(True)}".encode()
    assert not storage.create_exclusive(uri, b"late")


def test_a_file_another_host_writes_after_a_listing_is_seen_at_once(
    s3_endpoint: dict[str, str], s3_bucket: str
) -> None:
    """A reader that listed a folder still sees what another host commits there afterwards
    (fsspec's listings cache once hid it: ``exists`` False, ``open`` FileNotFoundError)."""
    from pipeline import storage

    bucket, other_host = s3_bucket, _other_host(s3_endpoint)
    folder = f"s3://{bucket}/features/abc123/parquet"
    storage.write_bytes(f"{folder}/part-a.parquet", b"a")
    assert storage.list_files(folder) == [f"{folder}/part-a.parquet"]
    other_host.pipe_file(f"{bucket}/features/abc123/parquet/part-b.parquet", b"b")
    assert storage.exists(f"{folder}/part-b.parquet")
    assert storage.read_bytes(f"{folder}/part-b.parquet") == b"b"
    assert storage.list_files(folder) == [f"{folder}/part-a.parquet", f"{folder}/part-b.parquet"]


def test_compactors_racing_on_s3_lose_no_entry(s3_bucket: str) -> None:
    """Extraction shards on several hosts write parts into one S3 feature folder and compact its
    index at once: each generation is a conditional PUT, a loser merges again onto the winner's,
    and every part written is in the index a fresh reader sees right after its writer
    compacted."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline import storage
    from pipeline.features.index import IndexReader, compact, entry_table, write_entry

    folder = f"s3://{s3_bucket}/features/abc123"
    writers, parts = 8, 6
    start = threading.Barrier(writers)

    def shard(worker: int) -> set[str]:
        start.wait()
        written = set()
        for p in range(parts):
            part, clip = f"part-w{worker}-{p}", f"w{worker}-c{p}"
            rows = pa.table(
                {
                    "clip_id": [clip],
                    "segment_index": pa.array([0], pa.int32()),
                    "n_segments": pa.array([1], pa.int32()),
                    "modality": ["video"],
                    "video_frames": pa.array([2], pa.int32()),
                    "audio_frames": pa.array([0], pa.int32()),
                }
            )
            # As FeatureStore.write_part: the entry, then the Parquet part that commits it.
            write_entry(f"{folder}/index", part, entry_table(part, rows, 1))
            sink = pa.BufferOutputStream()
            pq.write_table(rows, sink)
            storage.write_bytes(f"{folder}/parquet/{part}.parquet", bytes(sink.getvalue()))
            compact(folder)
            index = IndexReader(folder).read()
            assert index is not None and clip in index.clip_ids()
            written.add(clip)
        return written

    with ThreadPoolExecutor(writers) as pool:
        written = set().union(*pool.map(shard, range(writers)))
    assert len(written) == writers * parts
    final = compact(folder)
    index = IndexReader(folder).read()
    assert index is not None and index.clip_ids() == written and final.parts == len(written)


def test_pipeline_runs_with_its_data_in_s3(tmp_path: Path, s3_endpoint: dict[str, str]) -> None:
    import s3fs

    bucket = f"stpipe-{uuid.uuid4().hex[:8]}"
    fs = s3fs.S3FileSystem(
        client_kwargs={"endpoint_url": s3_endpoint["AWS_ENDPOINT_URL"]}, key="test", secret="test"
    )
    fs.mkdir(bucket)
    for i in range(4):
        colour_video(tmp_path / "in" / "rb" / f"{i}.mp4", [(200 - 10 * i, 0, 0), (0, 0, 200)])
        colour_video(tmp_path / "in" / "br" / f"{i}.mp4", [(0, 0, 200 - 10 * i), (200, 0, 0)])
    tone_file(tmp_path / "in" / "beep" / "0.wav")
    tone_file(tmp_path / "in" / "beep" / "1.wav", freq=600)
    env = {
        **os.environ,
        **s3_endpoint,
        "PIPELINE_DATA_DIR": f"s3://{bucket}/data",
        "PIPELINE_WAREHOUSE_URL": f"sqlite:///{tmp_path / 'warehouse.db'}",
        "PIPELINE_CNN_WEIGHTS": "none",
        "PIPELINE_IMAGE_SIZE": "32",
        "PIPELINE_FRAMES_PER_SEGMENT": "4",
    }

    def stpipe(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "pipeline", *args], env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, (
            f"stpipe {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr[-3000:]}"
        )
        return result.stdout

    stpipe("ingest", str(tmp_path / "in"), "--labelled")
    stpipe("extract")
    stpipe(
        "train", "--epochs", "2", "--batch-size", "4"
    )  # reads TFRecords from s3 via tensorflow-io
    stpipe("score")
    assert "problems" in stpipe("features", "verify")

    keys = fs.find(f"{bucket}/data")
    assert sum(k.endswith(".mp4") for k in keys) == 8
    assert any(k.endswith(".parquet") for k in keys) and any(
        k.endswith(".tfrecord.gz") for k in keys
    )
    assert any(k.endswith("model.keras") for k in keys) and any(
        k.endswith("metadata.json") for k in keys
    )
    assert not any(".tmp-" in k for k in keys)
    from pipeline.warehouse.database import Warehouse

    with Warehouse.connect(env["PIPELINE_WAREHOUSE_URL"]) as wh:
        assert wh.query("SELECT COUNT(*) AS n FROM predictions")[0]["n"] == 10
        assert all(
            r["media_uri"].startswith(f"s3://{bucket}/")
            for r in wh.query("SELECT media_uri FROM media_files")
        )


def _train_in(
    settings: Settings, s3_env: dict[str, str], workdir: Path, *args: str
) -> subprocess.Popen[str]:
    """``stpipe train`` started from its own working directory and local temporary folder, as
    a retried task on another Celery worker would start."""
    workdir.mkdir(parents=True)
    (workdir / "tmp").mkdir()
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "train", *args],
        env={**stpipe_env(settings), **s3_env, "TMPDIR": str(workdir / "tmp")},
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _keras_weights(fs: Any, uri: str) -> dict[str, Any]:
    return keras_file_weights(fs.cat(uri))


@pytest.mark.timeout(900)  # three trainings: 7.5 minutes on 2 busy cores
def test_training_killed_midway_resumes_from_its_checkpoints_in_s3_on_a_fresh_machine(
    tmp_path: Path,
    make_settings: Any,
    s3_endpoint: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import numpy as np
    import s3fs

    for key, value in s3_endpoint.items():
        monkeypatch.setenv(key, value)
    bucket = f"stpipe-{uuid.uuid4().hex[:8]}"
    fs = s3fs.S3FileSystem(
        client_kwargs={"endpoint_url": s3_endpoint["AWS_ENDPOINT_URL"]}, key="test", secret="test"
    )
    fs.mkdir(bucket)
    roots = {}
    for name in ("interrupted", "reference"):
        roots[name] = make_settings(
            data_dir=f"s3://{bucket}/{name}",
            warehouse_url=f"sqlite:///{tmp_path / f'{name}.db'}",
        )
        with Warehouse.connect(roots[name].warehouse) as warehouse:
            temporal_corpus(warehouse, FeatureStore.from_settings(roots[name]), per_class=40)
    train = ["--epochs", "6", "--patience", "100", "--batch-size", "4"]

    first = _train_in(roots["interrupted"], s3_endpoint, tmp_path / "worker-a", *train)
    killed_after = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None:
        states = fs.glob(f"{bucket}/interrupted/models/_runs/*/state.json")
        if states:
            fs.invalidate_cache()
            epoch = json.loads(fs.cat(states[0]))["epoch"]
            if epoch >= 1:
                first.send_signal(signal.SIGKILL)
                first.wait()
                killed_after = epoch
                break
        fs.invalidate_cache()
        time.sleep(0.2)
    assert killed_after is not None, "training finished or hung before it could be killed"
    assert first.returncode == -signal.SIGKILL
    run_keys = fs.find(f"{bucket}/interrupted/models/_runs")
    assert any(k.endswith(".keras") for k in run_keys)  # the checkpoint is in the bucket
    assert not any(".tmp-" in k for k in run_keys)

    resumed_output = _finish(
        _train_in(roots["interrupted"], s3_endpoint, tmp_path / "worker-b", *train)
    )
    _finish(_train_in(roots["reference"], s3_endpoint, tmp_path / "worker-c", *train))

    resumed = json.loads(fs.cat(f"{bucket}/interrupted/models/v0001/metadata.json"))
    uninterrupted = json.loads(fs.cat(f"{bucket}/reference/models/v0001/metadata.json"))
    assert "resuming" in resumed_output
    assert resumed["resumed_from_epoch"] == killed_after + 1  # no finished epoch was redone
    assert uninterrupted["resumed_from_epoch"] is None
    assert resumed["fingerprint"] == uninterrupted["fingerprint"]
    assert resumed["epochs_run"] == uninterrupted["epochs_run"] == 6
    # Each epoch's order is seeded by its number and the optimiser state is checkpointed, so
    # the resumed run repeats the uninterrupted one (op determinism on; float32 on one CPU).
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(
            resumed["history"][key], uninterrupted["history"][key], atol=1e-5
        )
    assert resumed["metrics"]["accuracy"] == uninterrupted["metrics"]["accuracy"]
    ours = _keras_weights(fs, f"{bucket}/interrupted/models/v0001/model.keras")
    theirs = _keras_weights(fs, f"{bucket}/reference/models/v0001/model.keras")
    assert ours.keys() == theirs.keys() and ours
    for name, array in ours.items():
        np.testing.assert_allclose(array, theirs[name], atol=1e-5, err_msg=name)
    # The finished run's checkpoints are gone; its TensorBoard logs stay beside them.
    left = fs.find(f"{bucket}/interrupted/models/_runs")
    assert not any(k.endswith((".keras", ".h5")) for k in left)
    assert any("/tensorboard/" in k for k in left)
    assert resumed["tensorboard"].startswith(f"s3://{bucket}/interrupted/models/_runs/")


def _finish(process: subprocess.Popen[str]) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-4000:]
    return output
