"""After the demo, later commands describe the demo's data: the demo writes its settings to
``DATA_DIR/stpipe.toml`` and ``stpipe`` reads that file when only the data dir is given."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.cli.demo import DEMO_DEFAULTS, write_settings_file
from pipeline.config import Settings, load_settings
from pipeline.features.store import FeatureStore
from pipeline.warehouse.database import Warehouse
from tests.feature_factory import temporal_corpus

pytestmark = pytest.mark.timeout(300)


def _stpipe_with_only_the_data_dir(data_dir: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env.update({"PIPELINE_DATA_DIR": data_dir, "COLUMNS": "250"})
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, f"stpipe {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_the_settings_file_reproduces_the_settings_it_was_written_from(tmp_path: Path) -> None:
    demo = load_settings(
        data_dir=str(tmp_path / "data"), **DEMO_DEFAULTS, n_mels=40, audio_of_video=False
    )
    path = write_settings_file(demo)
    assert path == tmp_path / "data" / "stpipe.toml"
    assert "data_dir" not in path.read_text()
    again = load_settings(data_dir=str(tmp_path / "data"))
    assert again == demo
    without_file = load_settings(data_dir=str(tmp_path / "fresh"))
    assert again.settings_hash == demo.settings_hash != without_file.settings_hash


def test_status_and_settings_after_the_demo_show_the_demos_feature_cache(
    make_settings: Callable[..., Settings],
) -> None:
    demo = make_settings(**DEMO_DEFAULTS)  # the demo's settings plus the suite's small ones
    with Warehouse.connect(demo.warehouse) as warehouse:
        temporal_corpus(warehouse, FeatureStore.from_settings(demo), per_class=3)
    before = _stpipe_with_only_the_data_dir(demo.data_dir, "settings")
    assert demo.settings_hash not in before  # what the issue saw: another settings hash
    write_settings_file(demo)

    shown = _stpipe_with_only_the_data_dir(demo.data_dir, "settings")
    assert demo.settings_hash in shown
    status = _stpipe_with_only_the_data_dir(demo.data_dir, "status")
    cache_line = next(line for line in status.splitlines() if "feature cache" in line)
    assert "6 clips, " in cache_line and demo.settings_hash in cache_line
