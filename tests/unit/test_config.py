from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import STREAMS, AudioFraming, Settings, VideoSampling, load_settings
from pipeline.errors import ConfigError
from pipeline.features.precision import RECORD_NAME


@pytest.fixture(autouse=True)
def auto_means_float32(tmp_path: Path) -> None:
    """The deployments of these tests decided ``auto`` = float32 (on any host), so that setting
    bfloat16 is a change wherever the tests run."""
    record = tmp_path / "features" / RECORD_NAME
    record.parent.mkdir(parents=True)
    record.write_text(
        '{"precision": "float32", "decided_by": "test", "isa": "avx2", "gpus": 0, '
        '"decided_at": "2026-01-01T00:00:00+00:00"}'
    )


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
    assert settings.cnn_precision == "auto"
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
        {"data_dir": str(tmp_path / "x"), "cnn_precision": "float32"},
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


#: Stands for a weights file the test writes in its tmp dir (a path must name an existing file).
WEIGHTS_FILE = "<weights file>"

#: Another valid value (or several) for EVERY field of Settings, none of them the default. A new
#: field needs a line here: deciding it is also deciding whether it changes the features (then it
#: gets a Changes(...) mark in pipeline/config.py).
ALTERNATIVES: dict[str, tuple[Any, ...]] = {
    "data_dir": ("/elsewhere/data",),
    "landing_dir": ("/elsewhere/landing",),
    "warehouse_url": ("postgresql+psycopg://u@h/db",),
    "warehouse_connections_file": ("/run/secrets/airflow_connections.json",),
    "cnn_weights": ("none", WEIGHTS_FILE),
    "image_size": (64,),
    "cnn_precision": ("bfloat16",),
    "cnn_batch_size": (8,),
    "segment_seconds": (5.0,),
    "frames_per_segment": (8,),
    "max_frames": (8,),  # below frames_per_segment, so it caps the video frames too
    "audio_of_video": (False,),
    "sample_rate": (8000,),
    "n_mels": (32,),
    "mel_window_ms": (30.0,),
    "mel_hop_ms": (5.0,),
    "audio_window_seconds": (0.5,),
    "audio_hop_seconds": (0.08,),
    "decode_workers": (7,),
    "extract_clips_per_shard": (50,),
    "extract_max_shards": (2,),
    "seed": (7,),
    "ingest_workers": (5,),
    "score_chunk_clips": (64,),
    "max_file_bytes": (1024**3,),
    "max_duration_seconds": (60.0,),
    "max_frame_pixels": (1920 * 1080,),
    "max_fps": (60.0,),
    "min_sample_rate": (8000,),
    "max_sample_rate": (48_000,),
    "min_bytes_per_second": (0.0,),
    "max_streams": (4,),
    "max_segments_per_clip": (10,),
    "claim_lease_seconds": (5.0,),
    "train_devices": (2,),
    "promotion_margin": (0.01,),
    "review_threshold": (0.5,),
    "drift_psi_threshold": (0.25,),
    "retrain_min_feedback": (20,),
    "quarantine_jump_factor": (3.0,),
    "quarantine_rate_floor": (0.05,),
}

#: Fields whose effect on the features shows only on top of another setting: the seed makes the
#: weights only when they are randomly initialised.
#: The data root changes no hash once the precision is explicit (with ``auto``, each deployment's
#: root records its own decision).
BASE_FOR: dict[str, dict[str, Any]] = {
    "seed": {"cnn_weights": "none"},
    "data_dir": {"cnn_precision": "float32"},
}


def _value(alternative: Any, tmp_path: Path) -> Any:
    if alternative != WEIGHTS_FILE:
        return alternative
    weights = tmp_path / "vgg.weights.h5"
    weights.write_bytes(b"pretend weights")
    return str(weights)


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_setting_changes_exactly_the_hashes_its_mark_names(tmp_path: Path, name: str) -> None:
    if name not in ALTERNATIVES:
        pytest.fail(
            f"Settings.{name} has no alternative value in ALTERNATIVES ({__file__}): add one, and "
            "if the field changes feature values mark it with Changes(...) in pipeline/config.py"
        )
    mark = Settings.feature_marks().get(name)
    changes = mark.streams if mark else ()
    base_values = {"data_dir": str(tmp_path), **BASE_FOR.get(name, {})}
    base = Settings(**base_values)
    for alternative in ALTERNATIVES[name]:
        value = _value(alternative, tmp_path)
        changed = Settings(**{**base_values, name: value})
        assert getattr(changed, name) != getattr(base, name), f"{name}={value!r} is the default"
        for stream in STREAMS:
            stream_changed = changed.stream_hash(stream) != base.stream_hash(stream)
            assert stream_changed == (stream in changes), (
                f"{name}={value!r} {'changes' if stream_changed else 'does not change'} the "
                f"{stream} hash, but its mark is {mark}"
            )
        folder_changed = changed.settings_hash != base.settings_hash
        assert folder_changed == (mark is not None), (
            f"{name}={value!r} {'changes' if folder_changed else 'does not change'} "
            f"settings_hash, but its mark is {mark}"
        )


@pytest.mark.parametrize("weights", ["imagenet", WEIGHTS_FILE])
def test_seed_changes_no_hash_when_the_weights_do_not_come_from_it(
    tmp_path: Path, weights: str
) -> None:
    cnn_weights = _value(weights, tmp_path)
    base = Settings(data_dir=str(tmp_path), cnn_weights=cnn_weights)
    reseeded = Settings(data_dir=str(tmp_path), cnn_weights=cnn_weights, seed=7)
    assert reseeded.feature_settings() == base.feature_settings()
    assert reseeded.settings_hash == base.settings_hash


def test_max_frames_reaches_the_video_hash_only_as_a_cap(tmp_path: Path) -> None:
    base = Settings(data_dir=str(tmp_path), frames_per_segment=16, max_frames=64)
    longer = Settings(data_dir=str(tmp_path), frames_per_segment=16, max_frames=100)
    assert longer.stream_hash("video") == base.stream_hash("video")  # still 16 frames
    assert longer.stream_hash("audio") != base.stream_hash("audio")
    assert longer.video_sampling.frames_per_sequence == 16
    assert Settings(frames_per_segment=16, max_frames=5).video_sampling.frames_per_sequence == 5


def test_default_hashes_still_name_the_feature_folders_on_disk(tmp_path: Path) -> None:
    # Feature caches already written are named by these digits; a change here recomputes every
    # user's features, so it must be deliberate (bump EXTRACTOR_VERSION instead of drifting).
    # An empty data dir: ./data/stpipe.toml (written by `make demo`) must not change defaults.
    empty = str(tmp_path)
    default = Settings(data_dir=empty)
    assert default.stream_hash("video") == "5101529ed2a0de9f"
    assert default.stream_hash("audio") == "1f07e7f0edfbd8ca"
    assert default.settings_hash == "f9835aaf7b2f7b3c"
    other = Settings(
        data_dir=empty,
        image_size=64,
        frames_per_segment=80,
        max_frames=20,
        n_mels=40,
        cnn_precision="bfloat16",
        audio_of_video=False,
        segment_seconds=5.0,
        mel_hop_ms=5.0,
        audio_hop_seconds=0.08,
        sample_rate=8000,
    )
    assert other.stream_hash("video") == "87cd1ab3c5ae9625"
    assert other.stream_hash("audio") == "36c31dd17d731074"
    assert other.settings_hash == "c91a5dcc7d5b9375"
    random_init = Settings(data_dir=empty, cnn_weights="none", seed=7)
    assert random_init.settings_hash == "43e3402b78fd1b6e"


@pytest.mark.parametrize(("stream", "view"), [("video", VideoSampling), ("audio", AudioFraming)])
def test_stream_views_hold_exactly_the_fields_marked_to_shape_their_stream(
    stream: str, view: type
) -> None:
    marked = {
        name
        for name, mark in Settings.feature_marks().items()
        if stream in mark.streams and mark.hashed_as is None
    }
    assert {f.name for f in fields(view)} == marked


def test_encoder_marks_name_items_of_every_stream_settings() -> None:
    encoder_marks = {m.hashed_as for m in Settings.feature_marks().values() if m.hashed_as}
    assert encoder_marks == {"cnn_weights", "precision"}
    for stream in STREAMS:
        assert encoder_marks <= set(Settings().stream_settings(stream))


def test_unknown_stream_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown stream 'smell'"):
        Settings().stream_settings("smell")


# Precedence: keyword arguments > environment > PIPELINE_SETTINGS_FILE > DATA_DIR/stpipe.toml
# > defaults, the data-dir file found through the data dir actually in use.


def test_each_settings_level_wins_over_the_ones_below(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    (data_dir / "stpipe.toml").write_text(
        "image_size = 40\nn_mels = 41\nmax_frames = 42\nframes_per_segment = 5\n"
    )
    explicit = tmp_path / "explicit.toml"
    explicit.write_text("n_mels = 50\nmax_frames = 52\nframes_per_segment = 6\n")
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("PIPELINE_SETTINGS_FILE", str(explicit))
    monkeypatch.setenv("PIPELINE_MAX_FRAMES", "62")
    monkeypatch.setenv("PIPELINE_FRAMES_PER_SEGMENT", "7")
    settings = load_settings(frames_per_segment=8)
    assert settings.frames_per_segment == 8  # keyword argument
    assert settings.max_frames == 62  # environment
    assert settings.n_mels == 50  # PIPELINE_SETTINGS_FILE
    assert settings.image_size == 40  # DATA_DIR/stpipe.toml
    assert settings.sample_rate == 16000  # default


def test_the_data_dir_file_read_is_the_one_of_the_data_dir_in_use(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, size in (("env", 40), ("kwarg", 48), ("explicit", 56)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "stpipe.toml").write_text(f"image_size = {size}\n")
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path / "env"))
    assert load_settings().image_size == 40
    assert load_settings(data_dir=str(tmp_path / "kwarg")).image_size == 48
    assert load_settings(data_dir=str(tmp_path / "elsewhere")).image_size == 224
    monkeypatch.delenv("PIPELINE_DATA_DIR")
    explicit = tmp_path / "explicit.toml"
    explicit.write_text(f'data_dir = "{tmp_path / "explicit"}"\n')
    monkeypatch.setenv("PIPELINE_SETTINGS_FILE", str(explicit))
    assert load_settings().image_size == 56


def test_the_default_data_dir_has_its_settings_file_read_and_its_data_dir_key_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "stpipe.toml").write_text(
        f'data_dir = "{tmp_path / "other"}"\ncnn_weights = "none"\n'
    )
    settings = load_settings()
    assert settings.data_dir == str(tmp_path / "data")
    assert settings.cnn_weights == "none"


def test_an_unreadable_data_dir_settings_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "stpipe.toml").write_text("image_size = = 3\n")
    with pytest.raises(ConfigError, match=r"stpipe\.toml"):
        load_settings(data_dir=str(tmp_path))


def test_decoding_threads_follow_the_core_count_unless_set(tmp_path: Path) -> None:
    import os

    cores = len(os.sched_getaffinity(0))
    assert load_settings(data_dir=str(tmp_path)).decode_threads == min(8, max(2, cores // 2))
    assert load_settings(data_dir=str(tmp_path), decode_workers=3).decode_threads == 3
    with pytest.raises(ConfigError, match="PIPELINE_DECODE_WORKERS"):
        load_settings(data_dir=str(tmp_path), decode_workers=-1)
