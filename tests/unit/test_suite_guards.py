"""The suite's own guards (tests/conftest.py): a hang fails in seconds with stacks printed, and a
fork after TensorFlow fails at once instead of deadlocking at random."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

HANGING_TEST = """
import subprocess, sys
import pytest

@pytest.mark.timeout(3)
def test_waits_on_a_child_that_never_ends():
    subprocess.run([sys.executable, "-c", "import time; time.sleep(600)"])
"""


def test_a_hung_test_fails_with_its_threads_and_child_processes_dumped(tmp_path: Path) -> None:
    test_file = tmp_path / "test_hangs.py"
    test_file.write_text(HANGING_TEST)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.conftest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(test_file),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Timeout after 3.0 s" in output
    assert "time.sleep(600)" in output  # the child's command line
    assert "Thread " in output and "<module> (<string>:1)" in output  # py-spy's dump of it
    assert "Stack of" in output  # the test process's own threads
    assert "1 failed" in output


def _child() -> None:
    pass


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("start_method", "exit_code"), [("fork", 70), ("spawn", 0)])
def test_after_tensorflow_a_forked_child_exits_at_once_and_a_spawned_one_runs(
    start_method: str, exit_code: int
) -> None:
    import tensorflow  # noqa: F401  (what makes a fork unsafe)

    process = multiprocessing.get_context(start_method).Process(target=_child)
    process.start()
    process.join(60)
    assert process.exitcode == exit_code
