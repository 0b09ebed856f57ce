"""Running ``stpipe`` as a user would: in its own process, with the test's settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

from pipeline.config import Settings
from tests.conftest import pipeline_env


def stpipe_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {**os.environ, **pipeline_env(settings), "COLUMNS": "200", **extra}


def stpipe(
    settings: Settings, *args: str, check: bool = True, timeout: float = 240, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pipeline ARGS`` to completion."""
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env=stpipe_env(settings, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"stpipe {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def start_stpipe(settings: Settings, *args: str, **env: str) -> subprocess.Popen[str]:
    """Start ``python -m pipeline ARGS`` in the background (stdout and stderr together)."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        env=stpipe_env(settings, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 240) -> str:
    """Wait for a started process; fail with its output unless it exited 0."""
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"exit {process.returncode}:\n{output[-4000:]}"
    return output


def summary_values(output: str) -> dict[str, Any]:
    """The ``key │ value`` rows of a stage's summary table, values as int where they are."""
    values: dict[str, Any] = {}
    for match in re.finditer(r"│\s*([a-z_]+)\s*│\s*(.*?)\s*│", output):
        key, value = match.groups()
        values[key] = int(value) if value.lstrip("-").isdigit() else value
    return values
