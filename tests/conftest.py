"""Test-session set-up shared by unit, DAG and end-to-end tests.

Airflow reads its configuration when first imported, so its home (and SQLite metadata DB) is
pointed at a fresh temporary folder here, before any test imports it. Every ``PIPELINE_*``
variable of the calling shell is removed so tests see only the settings they set.

The suite cannot hang:

* a process that has loaded TensorFlow must never ``fork()`` without ``exec`` (its threads'
  locks are copied held, and the child can wait on them forever): a child forked from such a
  process exits at once with status 70 and a message, so the mistake fails fast instead of
  hanging at random. Use ``multiprocessing.get_context("spawn")`` or a subprocess.
* every test has a timeout (``timeout`` in pyproject.toml, ``pytest.mark.timeout(N)`` for the
  long ones). When it expires, the stacks of the test's threads and of every child process
  (py-spy) are printed, the children are killed and the test fails; if the test does not come
  back within another minute (stuck in C code), everything is dumped and pytest exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def _datasets_dir() -> Path:
    """The read-only shared datasets: $STPIPE_DATASETS, or ../shared/datasets beside the
    checkout, or the workplace's /work/shared/datasets (CI clones elsewhere)."""
    candidates = [os.environ.get("STPIPE_DATASETS"), REPO.parent / "shared" / "datasets"]
    candidates.append("/work/shared/datasets")
    for candidate in candidates:
        if candidate and (Path(candidate) / "fsdd").is_dir():
            return Path(candidate)
    return REPO.parent / "shared" / "datasets"  # tests using it fail, naming this path


DATASETS = _datasets_dir()

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="stpipe-test-airflow-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
for _key in [k for k in os.environ if k.startswith("PIPELINE_")]:
    del os.environ[_key]


def _refuse_fork_after_tensorflow() -> None:
    if "tensorflow" in sys.modules:
        os.write(
            2,
            b"\nFORKED A PROCESS THAT HAS LOADED TENSORFLOW: the child can deadlock. Use "
            b"multiprocessing.get_context('spawn') or a subprocess. Child exits 70.\n",
        )
        os._exit(70)


os.register_at_fork(after_in_child=_refuse_fork_after_tensorflow)


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (from /proc), parents before children."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _dump_and_kill_children(terminal: Any) -> None:
    """Print what every child process is doing (py-spy for Python ones), then SIGKILL them
    so a test blocked on one comes back."""
    spy = Path(sys.executable).with_name("py-spy")
    for pid in _descendants(os.getpid()):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        terminal.sep("~", title=f"child process {pid}: {command[:150]}")
        if spy.exists() and any(word in command for word in ("python", "airflow", "stpipe")):
            dump = subprocess.run(
                [str(spy), "dump", "--pid", str(pid)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            terminal.write(dump.stdout + dump.stderr)
    for pid in reversed(_descendants(os.getpid())):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool:
    """Per-test timeout: dump and kill child processes, dump threads, fail the test; a minute
    later, if the test is still stuck, dump again and end the session (pytest-timeout's
    thread method)."""
    import pytest_timeout

    terminal = item.config.get_terminal_writer()

    def on_timeout(_signum: int, _frame: Any) -> None:
        __tracebackhide__ = True
        terminal.sep("+", title=f"Timeout after {settings.timeout} s: {item.nodeid}")
        _dump_and_kill_children(terminal)
        pytest_timeout.timeout_sigalrm(item, settings)

    def backstop() -> None:
        _dump_and_kill_children(terminal)
        pytest_timeout.timeout_timer(item, settings)

    stuck = threading.Timer(settings.timeout + 60, backstop)
    stuck.daemon = True

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        stuck.cancel()

    item.cancel_timeout = cancel  # type: ignore[attr-defined]
    signal.signal(signal.SIGALRM, on_timeout)
    signal.setitimer(signal.ITIMER_REAL, settings.timeout)
    stuck.start()
    return True


# Airflow puts the DAGs folder on sys.path for DAG files and tasks; tests do the same.
if str(REPO / "dags") not in sys.path:
    sys.path.insert(0, str(REPO / "dags"))

from pipeline.config import Settings, load_settings  # noqa: E402
from pipeline.warehouse.database import Warehouse  # noqa: E402

PG_ADMIN_URL = os.environ.get(
    "STPIPE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings rooted in the test's tmp dir: random-init VGG-16 at 32 px, small batches, and
    float32 (most tests compare numbers exactly; tests of ``auto`` and bfloat16 ask for them)."""

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": str(tmp_path / "data"),
            "cnn_weights": "none",
            "image_size": 32,
            "cnn_batch_size": 16,
            "cnn_precision": "float32",
            "frames_per_segment": 8,
            "max_frames": 8,
        }
        values.update(overrides)
        return load_settings(**values)

    return factory


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


def pipeline_env(settings: Settings) -> dict[str, str]:
    """PIPELINE_* variables that reproduce ``settings`` in a subprocess or Airflow task."""
    from pipeline.cli.demo import settings_env

    return settings_env(settings)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """The PostgreSQL server the suite must use. Unreachable = failure, not a skip, unless
    STPIPE_SKIP_POSTGRES=1 is set (for laptops without the server)."""
    import sqlalchemy as sa

    if os.environ.get("STPIPE_SKIP_POSTGRES") == "1":
        pytest.skip("STPIPE_SKIP_POSTGRES=1")
    engine = sa.create_engine(PG_ADMIN_URL)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({exc.orig}); start it, or set "
            "STPIPE_SKIP_POSTGRES=1 to skip the PostgreSQL tests"
        )
    finally:
        engine.dispose()
    return PG_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    import sqlalchemy as sa

    name = f"stpipe_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(postgres_admin_url).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty warehouse of each kind: a new SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'w.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def warehouse(warehouse_url: str) -> Iterator[Warehouse]:
    """The warehouse at ``warehouse_url``, migrated."""
    wh = Warehouse.connect(warehouse_url)
    yield wh
    wh.dispose()


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """Airflow's metadata DB (SQLite in the session's AIRFLOW_HOME), migrated once."""
    subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    return _AIRFLOW_HOME
