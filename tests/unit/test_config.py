from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Settings, load_settings
from pipeline.errors import ConfigError


def test_defaults_follow_the_design_contract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.data_dir == str(tmp_path / "data")
    assert settings.landing_root == f"{tmp_path}/data/landing"
    assert settings.warehouse == f"sqlite:///{tmp_path}/data/warehouse.db"
    assert settings.cnn_weights == "imagenet"
    assert settings.image_size == 224
    assert settings.cnn_precision == "float32"
    assert (settings.frames_per_segment, settings.sample_rate, settings.n_mels) == (16, 16000, 64)
    assert (settings.segment_seconds, settings.max_frames, settings.audio_of_video) == (
        10.0,
        64,
        True,
    )
    assert (settings.mel_window_ms, settings.mel_hop_ms) == (25.0, 10.0)


def test_environment_variables_set_fields(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("PIPELINE_LANDING_DIR", str(tmp_path / "in"))
    monkeypatch.setenv("PIPELINE_WAREHOUSE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("PIPELINE_IMAGE_SIZE", "64")
    monkeypatch.setenv("PIPELINE_CNN_WEIGHTS", "none")
    monkeypatch.setenv("PIPELINE_CNN_PRECISION", "bfloat16")
    settings = load_settings()
    assert settings.landing_root == str(tmp_path / "in")
    assert settings.warehouse == "postgresql+psycopg://u@h/db"
    assert settings.image_size == 64
    assert settings.cnn_weights_id == f"random-seed{settings.seed}"
    assert settings.resolved_precision() == "bfloat16"


def test_settings_file_fills_in_what_the_environment_does_not(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "stpipe.toml"
    config.write_text('image_size = 96\nn_mels = 40\ncnn_weights = "none"\n')
    monkeypatch.setenv("PIPELINE_SETTINGS_FILE", str(config))
    monkeypatch.setenv("PIPELINE_IMAGE_SIZE", "48")
    settings = load_settings()
    assert settings.image_size == 48  # the environment wins
    assert settings.n_mels == 40
    assert settings.cnn_weights == "none"


def test_missing_settings_file_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PIPELINE_SETTINGS_FILE", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="PIPELINE_SETTINGS_FILE"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PIPELINE_IMAGE_SIZE", "16", "at least 32"),
        ("PIPELINE_IMAGE_SIZE", "big", "PIPELINE_IMAGE_SIZE"),
        ("PIPELINE_CNN_PRECISION", "float8", "PIPELINE_CNN_PRECISION"),
        ("PIPELINE_MAX_FRAMES", "0", "PIPELINE_MAX_FRAMES"),
        ("PIPELINE_AUDIO_HOP_SECONDS", "2.0", "AUDIO_HOP_SECONDS"),
    ],
)
def test_bad_values_raise_config_errors_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_settings_hash_covers_what_changes_features_and_nothing_else(tmp_path: Path) -> None:
    base = load_settings(data_dir=str(tmp_path), cnn_weights="none")
    assert (
        base.settings_hash
        == load_settings(data_dir=str(tmp_path), cnn_weights="none").settings_hash
    )
    for change in (
        {"image_size": 64},
        {"frames_per_segment": 8},
        {"n_mels": 32},
        {"audio_window_seconds": 0.5},
        {"segment_seconds": 5.0},
        {"audio_of_video": False},
        {"cnn_precision": "bfloat16"},
        {"seed": 7},  # random-init weights depend on it
        {"cnn_weights": "imagenet"},
    ):
        changed = load_settings(data_dir=str(tmp_path), **{"cnn_weights": "none", **change})
        assert changed.settings_hash != base.settings_hash, change
    for harmless in (
        {"decode_workers": 7},
        {"cnn_batch_size": 8},
        {"data_dir": str(tmp_path / "x")},
    ):
        same = load_settings(**{"data_dir": str(tmp_path), "cnn_weights": "none", **harmless})
        assert same.settings_hash == base.settings_hash, harmless


@pytest.mark.parametrize(
    ("change", "video_changes", "audio_changes"),
    [
        ({"n_mels": 32}, False, True),
        ({"audio_hop_seconds": 0.08}, False, True),
        ({"frames_per_segment": 8}, True, False),
        ({"image_size": 64}, True, True),
        ({"cnn_precision": "bfloat16"}, True, True),
        ({"segment_seconds": 5.0}, True, True),
        ({"audio_of_video": False}, False, False),  # changes which rows exist, not the numbers
    ],
)
def test_each_stream_hash_covers_only_its_own_settings(
    tmp_path: Path, change: dict, video_changes: bool, audio_changes: bool
) -> None:
    base = load_settings(data_dir=str(tmp_path), cnn_weights="none")
    changed = load_settings(data_dir=str(tmp_path), cnn_weights="none", **change)
    assert (changed.stream_hash("video") != base.stream_hash("video")) == video_changes
    assert (changed.stream_hash("audio") != base.stream_hash("audio")) == audio_changes


def test_weights_file_is_identified_by_its_content(tmp_path: Path) -> None:
    weights = tmp_path / "vgg.weights.h5"
    weights.write_bytes(b"pretend weights")
    first = load_settings(data_dir=str(tmp_path), cnn_weights=str(weights))
    assert first.cnn_weights_id.startswith("sha256:")
    weights.write_bytes(b"other weights")
    second = load_settings(data_dir=str(tmp_path), cnn_weights=str(weights))
    assert second.settings_hash != first.settings_hash


def test_missing_weights_file_says_what_is_accepted(tmp_path: Path) -> None:
    settings = load_settings(data_dir=str(tmp_path), cnn_weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ConfigError, match="neither 'imagenet', 'none'"):
        _ = settings.settings_hash


def test_remote_data_dir_needs_a_warehouse_url() -> None:
    settings = Settings(data_dir="s3://bucket/stpipe")
    assert settings.features_root == "s3://bucket/stpipe/features"
    with pytest.raises(ConfigError, match="PIPELINE_WAREHOUSE_URL"):
        _ = settings.warehouse
