"""Project exceptions. Each message says what was wrong and what to do about it.

Two kinds of failure are told apart everywhere a batch is processed:

* a problem with one file or clip (:class:`MediaError`, a :class:`LimitError`, or any other
  exception raised while handling it) quarantines that file with the reason, and the batch goes
  on;
* an *infrastructure* failure (the warehouse unreachable, a disk full, out of memory; see
  :func:`infrastructure_problem`) stops the run with an :class:`InfrastructureError` that says
  what to fix. Nothing is half-written, so re-running afterwards is safe.
"""

from __future__ import annotations

import errno
import os
import sys


class PipelineError(Exception):
    """Base class for errors the pipeline reports to its users."""


class ConfigError(PipelineError):
    """A setting is missing, malformed or inconsistent."""


class MediaError(PipelineError):
    """A media file cannot be probed or decoded; the clip is quarantined."""


class LimitError(MediaError):
    """A media file would cost more than a configured limit allows; the clip is quarantined.

    ``limit`` names the setting (e.g. ``PIPELINE_MAX_FRAME_PIXELS``) so the reason says which
    limit to raise if the file is wanted after all.
    """

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(f"{message} (over the limit {limit}; raise it to accept such files)")
        self.limit = limit


class UnsafePathError(PipelineError):
    """A path is not a regular file inside the folder it must stay in (a link leading out of
    it, a FIFO, a socket, a device); it is skipped and never opened for reading."""


class StoreError(PipelineError):
    """The feature store is inconsistent or unreadable."""


class DataValidationError(PipelineError):
    """The training data cannot produce a meaningful model."""


class NoProductionModelError(PipelineError):
    """Scoring was asked for but no model has been promoted to production."""


class InfrastructureError(PipelineError):
    """The warehouse, a disk or memory failed: the run stops. Fix the cause and re-run; no
    output is half-written, so the re-run picks up where this one stopped."""


#: OSError numbers that mean the machine, not the file, is at fault.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}
_OUT_OF_MEMORY_NAMES = {"ResourceExhaustedError", "ArrowMemoryError"}


def infrastructure_problem(exc: BaseException) -> str | None:
    """What is wrong with the infrastructure if ``exc`` is an infrastructure failure, else None.

    Used at every per-file boundary: None means "quarantine this file and go on".
    """
    if isinstance(exc, InfrastructureError):
        return str(exc)
    if isinstance(exc, MemoryError) or type(exc).__name__ in _OUT_OF_MEMORY_NAMES:
        return (
            f"out of memory ({type(exc).__name__}: {exc}); give the process more memory, or "
            "lower PIPELINE_CNN_BATCH_SIZE / PIPELINE_DECODE_WORKERS"
        )
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        return (
            f"cannot write to disk ({os.strerror(exc.errno or 0)}: {exc.filename or exc}); free "
            "space or raise the quota / file-size limit"
        )
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is not None:
        unreachable = isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
        invalidated = isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
        if unreachable or invalidated:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            return (
                f"lost the warehouse ({reason}); check that the database server is up and "
                "PIPELINE_WAREHOUSE_URL is right"
            )
    return None


def describe(exc: BaseException) -> str:
    """A one-line reason for a quarantine record: the message, prefixed by the exception type
    unless it is one of ours (whose messages are written for users)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, PipelineError):
        text = f"{type(exc).__name__}: {text}"
    # Messages may quote file names with undecodable bytes; keep them storable as UTF-8.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= 500 else text[:497] + "..."
