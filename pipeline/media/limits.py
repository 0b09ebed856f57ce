"""What one media file may cost: the limits ingest and extraction enforce before doing work.

A landing folder is hostile by assumption: a 200 kB file can claim to be 8192x8192 pixels, a
day long, or sampled at 1 Hz, and each claim turns into memory, decoding time or millions of
VGG-16 images. Every limit is a setting (``PIPELINE_<NAME>``, defaults below); a file over one
is quarantined with a reason that names it. Probing checks the container's claims before
decoding anything, and decoding stops once it has done what the checked claims allow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from pipeline.errors import LimitError

if TYPE_CHECKING:
    from pipeline.config import Settings


@dataclass(frozen=True)
class MediaLimits:
    """Per-file cost limits (the defaults of the matching settings)."""

    max_file_bytes: int = 4 * 1024**3
    max_duration_seconds: float = 4 * 3600.0
    max_frame_pixels: int = 4096 * 2160
    max_fps: float = 240.0
    min_sample_rate: int = 4000
    max_sample_rate: int = 192_000
    #: Fewer bytes per second of claimed duration means an implausible header (a real
    #: recording, even a still picture at a low bitrate, needs more than this).
    min_bytes_per_second: float = 16.0
    max_streams: int = 16
    max_segments_per_clip: int = 1440

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaLimits:
        """The limits are the settings of the same names (``PIPELINE_MAX_FILE_BYTES``, ...)."""
        return cls(**{spec.name: getattr(settings, spec.name) for spec in fields(cls)})

    # Checks on what a container claims (before decoding) ---------------------------------

    def check_streams(self, count: int) -> None:
        if count > self.max_streams:
            raise LimitError(
                f"the file has {count} streams, more than {self.max_streams}",
                "PIPELINE_MAX_STREAMS",
            )

    def check_duration(self, seconds: float | None, size_bytes: int | None) -> None:
        """The claimed duration: at most the maximum, and backed by enough bytes."""
        if seconds is None or not math.isfinite(seconds) or seconds < 0:
            return
        if seconds > self.max_duration_seconds:
            raise LimitError(
                f"it claims to last {seconds:,.0f} s, longer than "
                f"{self.max_duration_seconds:,.0f} s",
                "PIPELINE_MAX_DURATION_SECONDS",
            )
        if size_bytes is not None and size_bytes < seconds * self.min_bytes_per_second:
            raise LimitError(
                f"it claims to last {seconds:,.1f} s in only {_bytes(size_bytes)} "
                f"({size_bytes / max(seconds, 1e-9):.2f} bytes per second): an implausible header",
                "PIPELINE_MIN_BYTES_PER_SECOND",
            )

    def check_frame_size(self, width: int, height: int) -> None:
        if width * height > self.max_frame_pixels:
            raise LimitError(
                f"its frames are {width}x{height} pixels, more than {self.max_frame_pixels:,} "
                "per frame",
                "PIPELINE_MAX_FRAME_PIXELS",
            )

    def check_fps(self, fps: float | None) -> None:
        if fps is not None and math.isfinite(fps) and fps > self.max_fps:
            raise LimitError(
                f"it claims {fps:,.0f} frames per second, more than {self.max_fps:g}",
                "PIPELINE_MAX_FPS",
            )

    def check_sample_rate(self, rate: int | None) -> None:
        if rate is not None and not self.min_sample_rate <= rate <= self.max_sample_rate:
            raise LimitError(
                f"its audio is sampled at {rate:,} Hz, outside {self.min_sample_rate:,}-"
                f"{self.max_sample_rate:,} Hz",
                "PIPELINE_MIN_SAMPLE_RATE / PIPELINE_MAX_SAMPLE_RATE",
            )

    def check_segments(self, count: int, segment_seconds: float) -> None:
        if count > self.max_segments_per_clip:
            raise LimitError(
                f"it would be cut into {count:,} segments of {segment_seconds:g} s, more than "
                f"{self.max_segments_per_clip:,}",
                "PIPELINE_MAX_SEGMENTS_PER_CLIP",
            )

    # Budgets for decoding (what the checked claims allow) -----------------------------------

    def frame_budget(self, seconds: float) -> int:
        """Most video frames a decoder may produce for ``seconds`` of video: twice what the
        frame-rate limit allows, plus slack for rounding and leading frames."""
        return int(2 * self.max_fps * max(seconds, 1.0)) + 64


def _bytes(size: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("kB", 1000)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"
