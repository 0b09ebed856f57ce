"""The stpipe CLI end to end (subprocesses, like a user): ingest -> extract -> train -> score,
then everything again, which must change nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.warehouse.database import Warehouse
from tests.conftest import pipeline_env
from tests.media_factory import small_corpus
from tests.processes import stpipe

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _snapshot(settings: Settings) -> dict[str, Any]:
    with Warehouse.connect(settings.warehouse) as wh:
        tables = {
            t: wh.query(f"SELECT * FROM {t} ORDER BY 1, 2")
            for t in ("media_files", "media_sources", "model_versions", "predictions")
        }
    files = {
        str(p.relative_to(settings.data_dir)): p.stat().st_mtime_ns
        for p in Path(settings.data_dir).rglob("*")
        if p.is_file() and "warehouse.db" not in p.name
    }
    return {"tables": tables, "files": files}


def test_cli_runs_every_stage_and_a_second_run_changes_nothing(
    tmp_path: Path, settings: Settings
) -> None:
    small_corpus(tmp_path / "media")
    stages = [
        ("ingest", str(tmp_path / "media" / "labelled"), "--labelled"),
        ("ingest", str(tmp_path / "media" / "unlabelled")),
        ("extract",),
        ("train", "--epochs", "10", "--batch-size", "8"),
        ("score", "--run-id", "nightly-1"),
    ]
    outputs = [stpipe(settings, *stage).stdout for stage in stages]
    assert "quarantined" in outputs[1] and "│ 1" in outputs[1].split("quarantined")[1][:20]
    with Warehouse.connect(settings.warehouse) as wh:
        counts = {
            r["status"]: r["n"]
            for r in wh.query("SELECT status, COUNT(*) AS n FROM media_files GROUP BY status")
        }
        predictions = wh.query("SELECT * FROM predictions")
        production = wh.production_model()
    assert counts == {"ok": 19, "quarantined": 1}
    assert len(predictions) == 19 and {p["run_id"] for p in predictions} == {"nightly-1"}
    assert production is not None and production.class_names == [
        "beep",
        "blue_then_red",
        "red_then_blue",
    ]

    before = _snapshot(settings)
    outputs = [stpipe(settings, *stage).stdout for stage in stages]
    assert _snapshot(settings) == before
    assert "reused" in outputs[3] and "True" in outputs[3]

    verify = stpipe(settings, "features", "verify").stdout
    assert "problems" in verify and "│ 0" in verify.split("problems")[1][:20]
    listing = stpipe(settings, "features", "list").stdout
    assert settings.settings_hash in listing and "(current)" in listing

    status = stpipe(settings, "status").stdout
    assert "production model" in status and production.model_version in status
    assert "broken.mp4" in status


def test_cli_errors_are_one_clear_line_and_exit_1(tmp_path: Path, settings: Settings) -> None:
    missing = stpipe(settings, "ingest", str(tmp_path / "nowhere"), check=False)
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    no_model = stpipe(settings, "score", check=False)
    assert no_model.returncode == 1 and "no production model" in no_model.stderr
    no_data = stpipe(settings, "train", check=False)
    assert no_data.returncode == 1 and "at least two classes" in no_data.stderr
    env_error = subprocess.run(
        [sys.executable, "-m", "pipeline", "extract"],
        env={**os.environ, **pipeline_env(settings), "PIPELINE_IMAGE_SIZE": "8"},
        capture_output=True,
        text=True,
    )
    assert env_error.returncode == 1 and "PIPELINE_IMAGE_SIZE" in env_error.stderr


def test_help_explains_each_command(settings: Settings) -> None:
    top = stpipe(settings, "--help").stdout
    for command in ("ingest", "extract", "train", "score", "demo", "status", "settings"):
        assert command in top
    assert "--labelled" in stpipe(settings, "ingest", "--help").stdout
    assert "--epochs" in stpipe(settings, "train", "--help").stdout


def test_models_commands_list_promote_and_roll_back(settings: Settings) -> None:
    from pipeline.features.store import FeatureStore
    from tests.feature_factory import temporal_corpus

    with Warehouse.connect(settings.warehouse) as wh:
        temporal_corpus(wh, FeatureStore.from_settings(settings), per_class=20)
    stpipe(settings, "train", "--epochs", "3")
    stpipe(settings, "train", "--epochs", "4", "--lstm-units", "32", "--no-promote")

    def production() -> str:
        with Warehouse.connect(settings.warehouse) as wh:
            return wh.production_model().model_version  # type: ignore[union-attr]

    listing = stpipe(settings, "models", "list").stdout
    assert (
        "v0001" in listing
        and "v0002" in listing
        and "production" in listing
        and "candidate" in listing
    )
    assert production() == "v0001"
    stpipe(settings, "models", "promote", "v0002", "--force")
    assert production() == "v0002"
    rolled_back = stpipe(settings, "models", "rollback").stdout
    assert production() == "v0001" and "scored" in rolled_back
    with Warehouse.connect(settings.warehouse) as wh:
        answers = wh.query("SELECT model_version, COUNT(*) AS n FROM latest_predictions GROUP BY 1")
        ok = len(wh.clips())
    # After the rollback every clip is answered by the restored model (scored right away),
    # although the newer v0002 scored them all more recently.
    assert answers == [{"model_version": "v0001", "n": ok}]
    missing = stpipe(settings, "models", "promote", "v0099", check=False)
    assert missing.returncode == 1 and "no model version 'v0099'" in missing.stderr
    gated = stpipe(settings, "models", "promote", "v0002", check=False)  # the gate decides
    assert ("is now in production" in gated.stdout) == (production() == "v0002")


def test_cli_trains_the_end_to_end_model_on_ingested_media_without_extract(
    tmp_path: Path, settings: Settings
) -> None:
    from pipeline.features.store import FeatureStore
    from pipeline.registry.artifacts import read_metadata

    small_corpus(tmp_path / "media")
    stpipe(settings, "ingest", str(tmp_path / "media" / "labelled"), "--labelled")
    trained = stpipe(settings, "train", "--end-to-end", "--epochs", "1")
    assert "end_to_end" in trained.stdout
    with Warehouse.connect(settings.warehouse) as wh:
        production = wh.production_model()
    assert production is not None and read_metadata(production)["kind"] == "end_to_end"
    assert production.class_names == ["beep", "blue_then_red", "red_then_blue"]
    assert FeatureStore.from_settings(settings).parquet_parts() == []
