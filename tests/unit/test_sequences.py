from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.errors import MediaError
from pipeline.media.sequences import SequenceSpec, iter_clip_images
from pipeline.media.synthetic import write_video
from tests.media_factory import gray_ramp_video, tone, tone_file
from tests.media_helpers import clip_images


def test_video_becomes_frames_per_segment_images(tmp_path: Path, settings: Settings) -> None:
    spec = SequenceSpec.from_settings(settings)
    images = clip_images(str(gray_ramp_video(tmp_path / "v.mp4")), "video", spec)
    assert images.shape == (settings.frames_per_segment, 32, 32, 3)
    assert images.dtype == np.uint8


def test_video_frames_are_capped_by_max_frames(tmp_path: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    spec = SequenceSpec.from_settings(make_settings(frames_per_segment=16, max_frames=5))
    images = clip_images(str(gray_ramp_video(tmp_path / "v.mp4")), "video", spec)
    assert images.shape[0] == 5


@pytest.mark.parametrize(("seconds", "expected"), [(0.1, 1), (1.0, 5), (3.0, 8)])
def test_audio_becomes_spectrogram_windows_padded_or_capped(
    tmp_path: Path, settings: Settings, seconds: float, expected: int
) -> None:
    # 0.32 s windows every 0.16 s: 1 s of audio holds 1 + (100 - 32) // 16 = 5 windows;
    # 3 s (17 windows) is capped at max_frames = 8; 0.1 s is padded to one window.
    spec = SequenceSpec.from_settings(settings)
    images = clip_images(str(tone_file(tmp_path / "a.wav", seconds=seconds)), "audio", spec)
    assert images.shape == (expected, 32, 32, 3)


def test_long_audio_becomes_equal_segments(tmp_path: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    spec = SequenceSpec.from_settings(make_settings(segment_seconds=2.0, max_frames=64))
    path = tone_file(tmp_path / "long.flac", seconds=7.0)
    items = list(iter_clip_images(str(path), "audio", spec, 7.0))
    # 7 s / 2 s rounds to 4 segments of 1.75 s = 28000 samples = 176 centred 10 ms columns,
    # each holding 1 + (176 - 32) // 16 = 10 windows.
    assert [it.stream for it in items] == ["audio"] * 4
    assert [(it.segment.index, it.segment.count) for it in items] == [(i, 4) for i in range(4)]
    assert items[-1].segment.end == pytest.approx(7.0)
    assert [it.images.shape[0] for it in items] == [10, 10, 10, 10]


def test_video_with_audio_track_gives_both_streams_on_the_same_segments(
    tmp_path: Path,
    make_settings,  # type: ignore[no-untyped-def]
) -> None:
    frames = np.stack([np.full((48, 64, 3), 8 * i, np.uint8) for i in range(40)])  # 4 s at 10 fps
    path = write_video(tmp_path / "talk.mp4", frames, 10, audio=(tone(4.0, 440), 16000))
    spec = SequenceSpec.from_settings(make_settings(segment_seconds=2.0, max_frames=64))
    items = list(iter_clip_images(str(path), "video", spec, None))
    by_stream = {s: [it for it in items if it.stream == s] for s in ("video", "audio")}
    assert [it.segment.index for it in by_stream["video"]] == [0, 1]
    assert [it.segment.index for it in by_stream["audio"]] == [0, 1]
    assert all(it.images.shape == (8, 32, 32, 3) for it in by_stream["video"])
    assert all(it.images.shape[0] >= 9 for it in by_stream["audio"])  # ~2 s of windows each
    first, second = by_stream["video"][0].segment, by_stream["video"][1].segment
    assert (first.start, second.end) == (0.0, pytest.approx(4.0, abs=0.15))
    # segment by segment, so a consumer of whole segments holds one at a time
    assert [(it.segment.index, it.stream) for it in items] == [
        (0, "video"),
        (0, "audio"),
        (1, "video"),
        (1, "audio"),
    ]


def test_video_without_audio_track_gives_empty_audio(tmp_path: Path, settings: Settings) -> None:
    path = write_video(tmp_path / "mute.mp4", np.zeros((10, 48, 64, 3), np.uint8), 10)
    items = list(iter_clip_images(str(path), "video", SequenceSpec.from_settings(settings), None))
    assert [(it.stream, it.images.shape[0]) for it in items] == [("video", 8), ("audio", 0)]


def test_audio_of_video_can_be_switched_off(tmp_path: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    spec = SequenceSpec.from_settings(make_settings(audio_of_video=False))
    path = gray_ramp_video(tmp_path / "v.mp4")
    assert [it.stream for it in iter_clip_images(str(path), "video", spec, None)] == ["video"]


def test_unknown_modality_is_a_media_error(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(MediaError, match="unknown modality"):
        clip_images(str(tmp_path / "x"), "smell", SequenceSpec.from_settings(settings))


def test_sequence_spec_holds_exactly_the_settings_marked_to_shape_sequences(
    settings: Settings,
) -> None:
    spec = SequenceSpec.from_settings(settings)
    assert {f.name for f in fields(SequenceSpec)} == set(settings.sequence_settings())
    assert asdict(spec) == {
        **asdict(settings.video_sampling),
        **asdict(settings.audio_framing),
        "audio_of_video": settings.audio_of_video,
    }


def test_sequence_spec_round_trips_through_model_metadata(make_settings) -> None:  # type: ignore[no-untyped-def]
    spec = SequenceSpec.from_settings(make_settings(n_mels=40, audio_of_video=False))
    assert SequenceSpec(**asdict(spec)) == spec
    written_before_audio_of_video = {k: v for k, v in asdict(spec).items() if k != "audio_of_video"}
    assert SequenceSpec(**written_before_audio_of_video).audio_of_video is True
