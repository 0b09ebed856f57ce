from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.feature_store import FeatureStore
from pipeline.stages import run_extract, run_ingest
from pipeline.warehouse import Warehouse
from tests.conftest import pipeline_env
from tests.media_factory import colour_video, gray_ramp_video, tone_file

pytestmark = pytest.mark.slow


def _small_corpus(root: Path) -> None:
    gray_ramp_video(root / "ramp" / "a.mp4")
    colour_video(root / "colour" / "b.mkv", [(255, 0, 0), (0, 0, 255)])
    tone_file(root / "tone" / "c.wav", seconds=1.0)
    tone_file(root / "tone" / "d.ogg", seconds=0.2, freq=880)


def test_extract_stores_one_sequence_per_clip(tmp_path: Path, settings: Settings) -> None:
    _small_corpus(tmp_path / "in")
    run_ingest(settings, str(tmp_path / "in"), labelled=True)
    summary = run_extract(settings)
    assert (summary.extracted, summary.cached, summary.quarantined) == (4, 0, 0)
    store = FeatureStore(settings.features_root, settings.settings_hash)
    with Warehouse.connect(settings.warehouse) as wh:
        by_name = {Path(c.uri).name: c.clip_id for c in wh.clips()}
    features = store.read_features()
    lengths = {name: features[cid].features.shape[0] for name, cid in by_name.items()}
    # video: frames_per_clip (8); 1 s of audio: 5 windows; 0.2 s: padded to 1 window
    assert lengths == {"a.mp4": 8, "b.mkv": 8, "c.wav": 5, "d.ogg": 1}
    assert summary.frames == 22
    settings_file = json.loads((Path(store.folder) / "settings.json").read_text())
    assert (
        settings_file["image_size"] == 32
        and settings_file["settings_hash"] == settings.settings_hash
    )
    # Frames of a red-then-blue video are not all alike: the CNN saw different pictures.
    colour = features[by_name["b.mkv"]].features
    assert not np.allclose(colour[0], colour[-1])


def test_rerun_skips_everything_without_importing_tensorflow(
    tmp_path: Path, settings: Settings
) -> None:
    _small_corpus(tmp_path / "in")
    run_ingest(settings, str(tmp_path / "in"), labelled=True)
    run_extract(settings)
    parts_before = sorted(p.name for p in Path(settings.features_root).rglob("*") if p.is_file())
    script = (
        "import sys, json\n"
        "from pipeline.config import load_settings\n"
        "from pipeline.stages import run_extract\n"
        "summary = run_extract(load_settings())\n"
        "print(json.dumps({'summary': summary.as_dict(),"
        " 'tf': 'tensorflow' in sys.modules, 'av': 'av' in sys.modules}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**pipeline_env(settings), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["summary"]["cached"] == 4 and report["summary"]["extracted"] == 0
    assert report["tf"] is False and report["av"] is False
    parts_after = sorted(p.name for p in Path(settings.features_root).rglob("*") if p.is_file())
    assert parts_after == parts_before


def test_changed_setting_recomputes_into_its_own_folder(tmp_path: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    _small_corpus(tmp_path / "in")
    small = make_settings()
    run_ingest(small, str(tmp_path / "in"), labelled=True)
    run_extract(small)
    bigger = make_settings(image_size=48)
    assert bigger.settings_hash != small.settings_hash
    summary = run_extract(bigger)
    assert summary.extracted == 4
    assert (
        FeatureStore(small.features_root, small.settings_hash).clip_ids()
        == FeatureStore(bigger.features_root, bigger.settings_hash).clip_ids()
    )
    assert run_extract(small).cached == 4  # the old features are still there and still valid


def test_clip_that_fails_to_decode_is_quarantined_and_the_rest_extracted(
    tmp_path: Path, settings: Settings
) -> None:
    _small_corpus(tmp_path / "in")
    run_ingest(settings, str(tmp_path / "in"), labelled=True)
    with Warehouse.connect(settings.warehouse) as wh:
        victim = next(c for c in wh.clips() if c.uri.endswith("a.mp4"))
    # The stored copy gets damaged after ingest (disk fault, bad sync).
    Path(victim.media_uri).write_bytes(b"garbage" * 100)  # type: ignore[arg-type]
    summary = run_extract(settings)
    assert (summary.extracted, summary.quarantined) == (3, 1)
    with Warehouse.connect(settings.warehouse) as wh:
        clip = wh.get_clip(victim.clip_id)
    assert (
        clip is not None and clip.status == "quarantined" and "cannot decode" in (clip.error or "")
    )
    reason = Path(settings.quarantine_root, f"{victim.clip_id}.reason.txt").read_text()
    assert "cannot decode" in reason
    assert run_extract(settings).cached == 3  # quarantined clips are no longer pending


def test_extract_with_no_clips_is_a_no_op(settings: Settings) -> None:
    summary = run_extract(settings)
    assert (summary.clips, summary.extracted) == (0, 0)
