"""``PIPELINE_CNN_PRECISION=auto`` across hosts of different kinds: one feature store.

Two ``stpipe`` processes stand for two hosts. One is capped by ``ONEDNN_MAX_CPU_ISA`` (the
instruction cap oneDNN itself obeys) to AVX-512 without bfloat16, a Skylake-class CPU, so it
would resolve ``auto`` to float32 on its own; the other is this machine as it is (AVX512-BF16 or
AMX: bfloat16). Whichever resolves ``auto`` first decides it for the deployment; the other must
find, extend and train on the same feature folder.
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.features.precision import RECORD_NAME, decide_auto_precision
from pipeline.features.store import FeatureStore, list_settings_folders
from pipeline.hardware import cpu_features
from tests.media_factory import colour_video, small_corpus, tone_file
from tests.processes import stpipe, summary_values

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

NO_BF16 = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}  # oneDNN emulates bfloat16 there
AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2"}  # oneDNN has no bfloat16 convolutions there


@pytest.fixture
def auto_settings(make_settings) -> Settings:  # type: ignore[no-untyped-def]
    if not cpu_features().bf16_native:
        pytest.skip("needs a host with native bfloat16 (AVX512-BF16, AMX or a GPU)")
    return make_settings(cnn_precision="auto")  # type: ignore[no-any-return]


def _record(settings: Settings) -> dict[str, str]:
    return json.loads(Path(settings.features_root, RECORD_NAME).read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("first", ["bf16-host", "float32-host"])
def test_hosts_that_resolve_auto_differently_share_one_feature_store(
    tmp_path: Path, auto_settings: Settings, first: str
) -> None:
    settings = auto_settings
    hosts = {"bf16-host": {}, "float32-host": NO_BF16}
    second = next(h for h in hosts if h != first)
    alone = "float32" if first == "float32-host" else "bfloat16"  # what `first` resolves alone

    small_corpus(tmp_path / "media")
    stpipe(settings, "ingest", str(tmp_path / "media" / "labelled"), "--labelled", **hosts[first])
    extracted = summary_values(stpipe(settings, "extract", **hosts[first]).stdout)
    assert extracted["extracted"] > 0
    record = _record(settings)
    assert record["precision"] == alone, record

    # The other host: `settings` shows the deployment's decision, and its own hardware.
    shown = stpipe(settings, "settings", **hosts[second]).stdout
    assert f"{alone} (auto, decided by" in shown
    assert ("avx512_core (capped from" in shown) == (second == "float32-host")

    # It finds every clip's features already there: nothing is computed again ...
    again = summary_values(stpipe(settings, "extract", **hosts[second]).stdout)
    assert again["extracted"] == 0 and again["cached"] == extracted["extracted"], again
    assert list_settings_folders(settings.features_root) == [settings.settings_hash]

    # ... extends the same folder with new clips, in the deployment's precision ...
    colour_video(tmp_path / "more" / "late.mp4", [(250, 0, 0), (0, 0, 250)])
    tone_file(tmp_path / "more" / "late.wav", seconds=1.5, freq=700)
    stpipe(settings, "ingest", str(tmp_path / "more"), **hosts[second])
    more = summary_values(stpipe(settings, "extract", **hosts[second]).stdout)
    assert more["extracted"] == 2, more
    assert list_settings_folders(settings.features_root) == [settings.settings_hash]
    assert FeatureStore.from_settings(settings).read_settings()["video"]["precision"] == alone

    # ... and trains on the folder the first host wrote.
    trained = stpipe(settings, "train", "--epochs", "3", "--batch-size", "8", **hosts[second])
    assert "model_version" in trained.stdout
    assert _record(settings) == record  # nobody decided again


@pytest.mark.parametrize(
    "host", [NO_BF16, {**AVX2, "TF_ENABLE_ONEDNN_OPTS": "0"}], ids=["avx512-core", "avx2-eigen"]
)
def test_features_of_a_host_that_emulates_bfloat16_match_the_native_ones(
    tmp_path: Path, auto_settings: Settings, make_settings, host: dict[str, str]
) -> None:  # type: ignore[no-untyped-def]
    """A host without bfloat16 hardware computes the deployment's bfloat16 features emulated
    (oneDNN on AVX-512; TensorFlow's Eigen kernels with oneDNN off): the same feature set,
    numbers within bfloat16's rounding of the native ones."""
    colour_video(tmp_path / "in" / "a.mp4", [(250, 0, 0), (0, 250, 0), (0, 0, 250)])
    tone_file(tmp_path / "in" / "b.wav", seconds=1.2, freq=500)
    features = {}
    for name, env in {"native": {}, "emulated": host}.items():
        settings = make_settings(cnn_precision="bfloat16", data_dir=str(tmp_path / name))
        stpipe(settings, "ingest", str(tmp_path / "in"), **env)
        stpipe(settings, "extract", **env)
        rows = FeatureStore.from_settings(settings).read_segments()
        features[name] = {
            (clip, seg.segment_index, stream): seg.stream(stream)
            for clip, segs in rows.items()
            for seg in segs
            for stream in ("video", "audio")
            if seg.stream(stream).shape[0]
        }
    assert features["native"].keys() == features["emulated"].keys() and features["native"]
    for key, a in features["native"].items():
        b = features["emulated"][key]
        cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert cosine.min() >= 0.999, (key, cosine.min())


def test_a_host_that_cannot_run_bfloat16_says_how_to(
    tmp_path: Path, auto_settings: Settings, make_settings
) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(cnn_precision="bfloat16")
    tone_file(tmp_path / "in" / "b.wav", seconds=1.2, freq=500)
    stpipe(settings, "ingest", str(tmp_path / "in"), **AVX2)
    failed = stpipe(settings, "extract", check=False, **AVX2)
    assert failed.returncode == 1
    assert "TF_ENABLE_ONEDNN_OPTS=0" in failed.stderr + failed.stdout
    assert not FeatureStore.from_settings(settings).clip_ids()


def _decide(root: str, cap: str, start: multiprocessing.synchronize.Event) -> str:
    import os

    os.environ["ONEDNN_MAX_CPU_ISA"] = cap
    start.wait()
    return decide_auto_precision(root).precision


def test_processes_deciding_auto_at_the_same_moment_agree(tmp_path: Path) -> None:
    if not cpu_features().bf16_native:
        pytest.skip("needs a host with native bfloat16 (AVX512-BF16, AMX or a GPU)")
    context = multiprocessing.get_context("spawn")
    manager = context.Manager()
    start = manager.Event()
    caps = ["AVX2", "ALL"] * 4
    with context.Pool(len(caps)) as pool:
        pending = [pool.apply_async(_decide, (str(tmp_path), cap, start)) for cap in caps]
        start.set()
        decided = [p.get(timeout=120) for p in pending]
    assert len(set(decided)) == 1, decided
    assert json.loads((tmp_path / RECORD_NAME).read_text())["precision"] == decided[0]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
