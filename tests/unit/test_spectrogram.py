from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pipeline.media.spectrogram import (
    TOP_DB,
    compute_log_mel,
    cut_windows,
    log_mel_images,
    stft_params,
    windows_to_images,
)
from tests.media_factory import tone
from tests.media_helpers import audio_seconds_needed


def test_stft_params_use_a_power_of_two_fft() -> None:
    assert stft_params(16000, 25, 10) == (512, 400, 160)
    assert stft_params(22050, 25, 10) == (1024, 551, 220)  # 551-sample window, 1024-point FFT


def test_log_mel_shape_and_range() -> None:
    log_mel = compute_log_mel(tone(1.0, 440), 16000, 64, 25, 10)
    assert log_mel.dtype == np.float32
    assert log_mel.shape == (64, 101)  # centred frames: 1 + 16000 // 160
    assert log_mel.max() == pytest.approx(0.0, abs=1e-4)
    assert log_mel.min() >= -TOP_DB


def test_silence_is_the_floor_not_nan() -> None:
    log_mel = compute_log_mel(np.zeros(8000, np.float32), 16000, 64, 25, 10)
    assert np.all(log_mel == -TOP_DB)


def test_higher_tones_light_up_higher_mel_bands() -> None:
    low = compute_log_mel(tone(0.5, 300), 16000, 64, 25, 10).mean(axis=1).argmax()
    high = compute_log_mel(tone(0.5, 3000), 16000, 64, 25, 10).mean(axis=1).argmax()
    assert high > low + 10


def test_cut_windows_pads_short_and_caps_long() -> None:
    short = cut_windows(np.zeros((64, 10), np.float32), 32, 16, 8)
    assert short.shape == (1, 64, 32)
    assert np.all(short[0, :, 10:] == -TOP_DB)
    ramp = np.tile(np.arange(200, dtype=np.float32), (4, 1))
    windows = cut_windows(ramp, 32, 16, 100)
    assert windows.shape == (1 + (200 - 32) // 16, 4, 32)
    assert windows[1, 0, 0] == 16  # second window starts one hop later
    assert cut_windows(ramp, 32, 16, 3).shape[0] == 3


def test_windows_become_square_three_channel_uint8_images() -> None:
    windows = np.full((2, 64, 32), -TOP_DB, np.float32)
    windows[1] = 0.0
    images = windows_to_images(windows, 48)
    assert images.shape == (2, 48, 48, 3)
    assert images.dtype == np.uint8
    assert images[0].max() == 0 and images[1].min() == 255
    assert np.array_equal(images[..., 0], images[..., 2])


def test_low_frequencies_are_drawn_at_the_bottom() -> None:
    windows = np.full((1, 64, 32), -TOP_DB, np.float32)
    windows[0, :8, :] = 0.0  # energy in the lowest mel bands
    image = windows_to_images(windows, 32)[0, :, :, 0]
    assert image[-1].mean() > 200 and image[0].mean() < 10


#: The default audio framing, at 32 px and at most 16 windows.
FRAMING: dict[str, Any] = dict(
    sample_rate=16000,
    n_mels=64,
    mel_window_ms=25,
    mel_hop_ms=10,
    window_seconds=0.32,
    hop_seconds=0.16,
    max_windows=16,
    image_size=32,
)


def test_rising_and_falling_tones_give_mirrored_window_sequences() -> None:
    rising = np.concatenate([tone(0.4, 400), tone(0.4, 800), tone(0.4, 1600)])
    falling = np.concatenate([tone(0.4, 1600), tone(0.4, 800), tone(0.4, 400)])
    up = log_mel_images(rising, **FRAMING)
    down = log_mel_images(falling, **FRAMING)
    assert up.shape == down.shape == (6, 32, 32, 3)
    brightest_row = lambda images: images[..., 0].mean(axis=2).argmax(axis=1)  # noqa: E731
    assert brightest_row(up)[0] > brightest_row(up)[-1]  # pitch climbs: the line moves up
    assert brightest_row(down)[0] < brightest_row(down)[-1]


def test_audio_seconds_needed_covers_the_capped_windows() -> None:
    assert audio_seconds_needed(0.32, 0.16, 16) == pytest.approx(0.32 + 15 * 0.16 + 0.05)
    seconds = audio_seconds_needed(0.32, 0.16, 16)
    images = log_mel_images(tone(seconds, 440), **FRAMING)
    assert images.shape[0] == 16
