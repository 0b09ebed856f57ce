"""The whole CLI flow with the data root in an S3 bucket (a local moto S3 server): media,
features (Parquet through fsspec, TFRecords read through tensorflow-io's s3 file system) and
models live in the bucket; the warehouse stays in SQLite. Every command must exit 0 (the
tensorflow-io exit abort is contained)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.media_factory import colour_video, tone_file

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
