"""Opening media files with PyAV (FFmpeg bundled in its wheels), for probing and decoding alike.

A local path or an object-store URI opens the same way; FFmpeg's errors become
:class:`~pipeline.errors.MediaError` with a short reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import av

from pipeline import storage
from pipeline.errors import MediaError
from pipeline.text import printable

_ATTACHED_PIC = int(getattr(getattr(av.stream, "Disposition", None), "attached_pic", 1024))


@contextlib.contextmanager
def open_container(
    uri: str, *, max_frame_pixels: int | None = None, name: str | None = None
) -> Iterator[Any]:
    """Open a media file (local path or object-store URI) for reading, as a PyAV container.

    ``max_frame_pixels`` is passed to FFmpeg's decoders (``max_pixels``), so probing a file
    that claims huge frames does not allocate them. ``name`` is how errors refer to the file
    (default: ``uri``).
    """
    options = {"max_pixels": str(max_frame_pixels)} if max_frame_pixels else {}
    shown = name or printable(uri)
    try:
        if storage.is_remote(uri):
            with (
                storage.open_read(uri) as handle,
                av.open(handle, mode="r", options=options) as container,
            ):
                yield _limit_decoders(container, options)
        else:
            with av.open(storage.local_path(uri), mode="r", options=options) as container:
                yield _limit_decoders(container, options)
    except (av.FFmpegError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise MediaError(f"cannot decode {shown}: {describe_av_error(exc)}") from exc


def _limit_decoders(container: Any, options: dict[str, str]) -> Any:
    """Give every video decoder the frame-size cap too: PyAV passes ``av.open``'s options only
    to stream detection, so a frame larger than the header claims would otherwise be decoded
    in full before anyone could look at its size."""
    if options:
        for stream in container.streams.video:
            if stream.codec_context is not None:
                stream.codec_context.options = {**stream.codec_context.options, **options}
    return container


def main_video_stream(container: Any) -> Any | None:
    """The first video stream that is not cover art (an audio file's attached picture)."""
    for stream in container.streams.video:
        if not int(stream.disposition) & _ATTACHED_PIC:
            return stream
    return None


def describe_av_error(exc: BaseException) -> str:
    """A short reason for an FFmpeg (or I/O) error, at most 300 characters."""
    # FFmpeg errors carry the file name again in str(exc); strerror is just the reason.
    text = (getattr(exc, "strerror", None) or str(exc)).strip() or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."
