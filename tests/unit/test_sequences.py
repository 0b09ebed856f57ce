from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.errors import MediaError
from pipeline.sequences import SequenceSpec, clip_images
from tests.media_factory import gray_ramp_video, tone_file


def test_video_becomes_frames_per_clip_images(tmp_path: Path, settings: Settings) -> None:
    spec = SequenceSpec.from_settings(settings)
    images = clip_images(str(gray_ramp_video(tmp_path / "v.mp4")), "video", spec)
    assert images.shape == (settings.frames_per_clip, 32, 32, 3)
    assert images.dtype == np.uint8


def test_video_frames_are_capped_by_max_frames(tmp_path: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    spec = SequenceSpec.from_settings(make_settings(frames_per_clip=16, max_frames=5))
    images = clip_images(str(gray_ramp_video(tmp_path / "v.mp4")), "video", spec)
    assert images.shape[0] == 5


@pytest.mark.parametrize(("seconds", "expected"), [(0.1, 1), (1.0, 5), (10.0, 8)])
def test_audio_becomes_spectrogram_windows_padded_or_capped(
    tmp_path: Path, settings: Settings, seconds: float, expected: int
) -> None:
    # 0.32 s windows every 0.16 s: 1 s of audio holds 1 + (100 - 32) // 16 = 5 windows;
    # 10 s is capped at max_frames = 8; 0.1 s is padded to one window.
    spec = SequenceSpec.from_settings(settings)
    images = clip_images(str(tone_file(tmp_path / "a.wav", seconds=seconds)), "audio", spec)
    assert images.shape == (expected, 32, 32, 3)


def test_unknown_modality_is_a_media_error(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(MediaError, match="unknown modality"):
        clip_images(str(tmp_path / "x"), "smell", SequenceSpec.from_settings(settings))
