"""TensorFlow and Keras, imported quietly. Modules that need them import them from here.

TensorFlow's C++ start-up messages (cuFFT/cuDNN factory registration, oneDNN notices) are noise
on CPU hosts and bury the pipeline's own log, so they are silenced unless the user already set
TF_CPP_MIN_LOG_LEVEL.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import tensorflow as tf

__all__ = ["enable_object_store_filesystems", "keras", "record_exit_code", "tf"]

_exit_code = 0
_guard_installed = False


def enable_object_store_filesystems() -> None:
    """Register tensorflow-io's s3:// and hdfs:// file systems with ``tf.io.gfile``.

    tensorflow-io's bundled AWS SDK aborts the process in its C++ static destructors at
    interpreter exit (exit status 134, "pure virtual method called"), even after a successful
    run. The guard installed here ends the process right after Python's own clean-up instead,
    with the exit status Python would have used, so the abort never happens.
    """
    global _guard_installed
    import tensorflow_io  # noqa: F401  (import registers the file systems)

    if not _guard_installed:
        atexit.register(_exit_before_native_teardown)
        _guard_installed = True


def record_exit_code(code: int) -> None:
    """Tell the exit guard the status the program is exiting with (the CLI calls this)."""
    global _exit_code
    _exit_code = code


def _exit_before_native_teardown() -> None:
    code = _exit_code
    if code == 0 and getattr(sys, "last_value", None) is not None:
        code = 1  # an uncaught exception is ending the program
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
