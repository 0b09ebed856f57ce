"""Audio as a sequence of images: windows of a librosa log-mel spectrogram.

A clip's spectrogram (frequency x time) is cut into fixed-width windows along time; each window
is scaled to the CNN's square input and repeated over three channels, so audio follows the same
VGG-16 -> LSTM path as video frames.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

#: Dynamic range kept below each clip's loudest bin, in dB. Quieter bins are clipped to black.
TOP_DB = 80.0


def stft_params(sample_rate: int, window_ms: float, hop_ms: float) -> tuple[int, int, int]:
    """(n_fft, win_length, hop_length) in samples. n_fft is the next power of two of the window
    (a non-power-of-two FFT size was measured 100x slower in librosa here)."""
    win_length = max(1, round(sample_rate * window_ms / 1000))
    hop_length = max(1, round(sample_rate * hop_ms / 1000))
    n_fft = 1 << max(0, math.ceil(math.log2(win_length)))
    return n_fft, win_length, hop_length


def compute_log_mel(
    samples: npt.NDArray[np.float32],
    sample_rate: int,
    n_mels: int,
    window_ms: float,
    hop_ms: float,
) -> npt.NDArray[np.float32]:
    """Log-mel power spectrogram in dB relative to the clip's loudest bin.

    Args:
        samples: mono audio ``(n_samples,)``, float, at ``sample_rate`` Hz.
        sample_rate: Hz.
        n_mels: mel bands (rows of the output), from 0 Hz to sample_rate / 2.
        window_ms, hop_ms: STFT analysis window and hop, milliseconds.

    Returns:
        float32 ``(n_mels, n_steps)``, values in [-TOP_DB, 0] dB, one column per hop.
    """
    import librosa  # heavy import, only where spectrograms are made

    if samples.ndim != 1:
        raise ValueError(f"expected mono samples of shape (n,), got {samples.shape}")
    n_fft, win_length, hop_length = stft_params(sample_rate, window_ms, hop_ms)
    if samples.size < n_fft:  # librosa needs at least one full frame
        samples = np.pad(samples, (0, n_fft - samples.size))
    power = librosa.feature.melspectrogram(
        y=samples.astype(np.float32, copy=False),
        sr=sample_rate,
        n_fft=n_fft,
        win_length=win_length,
        hop_length=hop_length,
        n_mels=n_mels,
        power=2.0,
    )
    peak = float(power.max())
    if peak <= 0.0:  # digital silence: everything at the floor
        return np.full(power.shape, -TOP_DB, dtype=np.float32)
    log_mel = librosa.power_to_db(power, ref=peak, top_db=TOP_DB)
    return np.asarray(log_mel, dtype=np.float32)


def cut_windows(
    log_mel: npt.NDArray[np.float32], window_steps: int, hop_steps: int, max_windows: int
) -> npt.NDArray[np.float32]:
    """Cut a spectrogram into windows along time.

    A spectrogram shorter than one window is padded with the floor value (silence) to one
    window; windows start every ``hop_steps`` columns and the last partial window is dropped
    unless it is the only one. At most ``max_windows`` windows are returned (the first ones).

    Returns:
        float32 ``(n_windows, n_mels, window_steps)``, 1 <= n_windows <= max_windows.
    """
    n_mels, n_steps = log_mel.shape
    if n_steps < window_steps:
        pad = np.full((n_mels, window_steps - n_steps), -TOP_DB, dtype=np.float32)
        log_mel = np.concatenate([log_mel, pad], axis=1)
        n_steps = window_steps
    n_windows = min(max_windows, 1 + (n_steps - window_steps) // hop_steps)
    windows: npt.NDArray[np.float32] = np.stack(
        [log_mel[:, i * hop_steps : i * hop_steps + window_steps] for i in range(n_windows)]
    ).astype(np.float32, copy=False)
    return windows


def windows_to_images(windows: npt.NDArray[np.float32], image_size: int) -> npt.NDArray[np.uint8]:
    """Scale dB windows to square 3-channel uint8 images for the CNN.

    [-TOP_DB, 0] dB maps linearly to [0, 255]; high frequencies at the top row. Resizing is
    bilinear (separable linear interpolation).

    Returns:
        uint8 ``(n_windows, image_size, image_size, 3)``.
    """
    scaled = (np.clip(windows, -TOP_DB, 0.0) + TOP_DB) * (255.0 / TOP_DB)
    scaled = scaled[:, ::-1, :]  # low frequencies at the bottom, as spectrograms are drawn
    resized = _resize_bilinear(scaled, image_size, image_size)
    images = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
    return np.repeat(images[..., np.newaxis], 3, axis=-1)


def _resize_bilinear(
    stack: npt.NDArray[np.floating[Any]], out_rows: int, out_cols: int
) -> npt.NDArray[np.float32]:
    """Resize ``(n, rows, cols)`` to ``(n, out_rows, out_cols)`` (align-centres bilinear)."""
    _, rows, cols = stack.shape
    row_weights = _interp_matrix(rows, out_rows)  # (out_rows, rows)
    col_weights = _interp_matrix(cols, out_cols)  # (out_cols, cols)
    return (row_weights @ stack.astype(np.float32)) @ col_weights.T


def _interp_matrix(size_in: int, size_out: int) -> npt.NDArray[np.float32]:
    centres = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
    centres = np.clip(centres, 0, size_in - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, size_in - 1)
    frac = centres - low
    matrix = np.zeros((size_out, size_in), dtype=np.float32)
    matrix[np.arange(size_out), low] += 1 - frac
    matrix[np.arange(size_out), high] += frac
    return matrix


def log_mel_images(
    samples: npt.NDArray[np.float32],
    *,
    sample_rate: int,
    n_mels: int,
    mel_window_ms: float,
    mel_hop_ms: float,
    window_seconds: float,
    hop_seconds: float,
    max_windows: int,
    image_size: int,
) -> npt.NDArray[np.uint8]:
    """Audio samples -> ``(n_windows, image_size, image_size, 3)`` uint8 spectrogram images."""
    log_mel = compute_log_mel(samples, sample_rate, n_mels, mel_window_ms, mel_hop_ms)
    window_steps = max(2, round(window_seconds * 1000 / mel_hop_ms))
    hop_steps = max(1, round(hop_seconds * 1000 / mel_hop_ms))
    windows = cut_windows(log_mel, window_steps, hop_steps, max_windows)
    return windows_to_images(windows, image_size)
