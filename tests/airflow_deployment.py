"""A real Airflow 3 deployment run as processes for the end-to-end tests: its environment, its
components (``airflow api-server``, ``scheduler``, ``dag-processor``, ... each a subprocess in
its own process group), their logs and the metadata database they share.

Used by tests/e2e/test_scheduler.py (LocalExecutor) and tests/e2e/test_fleet.py
(CeleryExecutor, two workers).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from pipeline.config import Settings
from tests.conftest import REPO, pipeline_env

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<unreadable: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


class Deployment:
    """One Airflow deployment in ``home``: its environment, components, logs and metadata DB."""

    def __init__(
        self,
        home: Path,
        metadata_url: str,
        settings: Settings,
        executor: str = "LocalExecutor",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.home = home
        self.logs = home / "component-logs"
        self.logs.mkdir(parents=True)
        self.api_port = free_port()
        # The test process reads the metadata DB with the suite's driver (psycopg 3); Airflow
        # is configured with psycopg2, the driver it documents for PostgreSQL.
        self.db = sa.create_engine(metadata_url, poolclass=sa.pool.NullPool)
        airflow_url = sa.engine.make_url(metadata_url).set(drivername="postgresql+psycopg2")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(pipeline_env(settings))
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": executor,
                "AIRFLOW__CORE__PARALLELISM": "2",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": (
                    f"http://127.0.0.1:{self.api_port}/execution/"
                ),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_url.render_as_string(
                    hide_password=False
                ),
                # Shared by the scheduler (signs task tokens) and the API server (checks them).
                "AIRFLOW__API_AUTH__JWT_SECRET": "stpipe-e2e-jwt-secret-not-for-production",
                "AIRFLOW__API__SECRET_KEY": "stpipe-e2e-secret-key-not-for-production",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "0",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra_env or {})
        self.env = env
        self.started = time.monotonic()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.killed: list[subprocess.Popen[bytes]] = []
        self._files: list[IO[bytes]] = []

    # Commands and components ------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 180) -> str:
        """Run ``airflow ARGS`` to completion; its output also goes to a log file."""
        name = "-".join(a for a in args[:2] if not a.startswith("-"))
        result = subprocess.run(
            [AIRFLOW, *args],
            env=self.env,
            cwd=self.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
        with (self.logs / f"cli-{name}.log").open("a") as log:
            log.write(f"$ airflow {' '.join(args)}\n{result.stdout}\n")
        if result.returncode != 0:
            raise AssertionError(
                f"airflow {' '.join(args)} exited {result.returncode}:\n{result.stdout[-4000:]}"
            )
        return result.stdout

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        """Start ``airflow ARGS`` in the background, in its own process group (``env`` adds to
        the deployment's environment for this component only)."""
        self.start_command(name, [AIRFLOW, *args], env=env)

    def start_command(
        self, name: str, command: list[str], env: dict[str, str] | None = None
    ) -> None:
        """Start ``command`` in the background, in its own process group."""
        log = (self.logs / f"{name}.log").open("ab")
        self._files.append(log)
        self.procs[name] = subprocess.Popen(
            command,
            env={**self.env, **(env or {})},
            cwd=self.home,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, name: str) -> None:
        """SIGKILL a component and every process under it, as a host or container dying would:
        its process group, and the task processes Airflow's supervisor puts in groups of their
        own. It is no longer checked for being alive."""
        import psutil

        proc = self.procs.pop(name)
        tree = psutil.Process(proc.pid).children(recursive=True)
        _signal_group(proc, signal.SIGKILL)
        for child in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        psutil.wait_procs(tree, timeout=30)
        proc.wait(timeout=30)
        self.killed.append(proc)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"airflow {name} exited early with {proc.returncode}")

    def stop(self) -> None:
        """SIGTERM each component's process group, then SIGKILL what is left after 30 s (task
        processes in groups of their own included)."""
        import psutil

        tree: list[psutil.Process] = []
        for proc in self.procs.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                tree.extend(psutil.Process(proc.pid).children(recursive=True))
        for proc in self.procs.values():
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            # The group may outlive its leader (executor workers, task supervisors).
            _signal_group(proc, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait(timeout=10)
        for child in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        for log in self._files:
            log.close()
        self.db.dispose()

    def wait_for_api(self, timeout: float = 120) -> None:
        url = f"http://127.0.0.1:{self.api_port}/execution/health"
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the API server did not answer {url} in {timeout} s")
            time.sleep(1)

    def keep_logs(self, destination: Path) -> Path:
        """Copy the component logs and the task logs to ``destination`` (kept after the test's
        temporary folder is gone); return it."""
        destination.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.logs, destination / "component-logs", dirs_exist_ok=True)
        if (self.home / "logs").exists():
            shutil.copytree(self.home / "logs", destination / "task-logs", dirs_exist_ok=True)
        return destination

    def report(self) -> str:
        """Log tails of the components, the CLI calls and every task attempt."""
        parts = [f"=== {path.name} ===\n{_tail(path)}" for path in sorted(self.logs.glob("*.log"))]
        for path in sorted((self.home / "logs").glob("dag_id=*/**/*.log")):
            parts.append(f"=== task log {path.relative_to(self.home / 'logs')} ===\n{_tail(path)}")
        return "\n\n".join(parts)

    # Metadata DB ---------------------------------------------------------------------------------

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self.db.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]

    def runs(self) -> list[dict[str, Any]]:
        return self.rows(
            "SELECT dag_id, run_id, run_type, state, start_date, end_date FROM dag_run "
            "ORDER BY dag_id, id"
        )

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.rows(
            "SELECT task_id, map_index, state, pool, start_date, end_date FROM task_instance "
            "WHERE dag_id = :dag_id AND run_id = :run_id ORDER BY task_id, map_index",
            dag_id=dag_id,
            run_id=run_id,
        )

    def return_value(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        [row] = self.rows(
            "SELECT value FROM xcom WHERE dag_id = :dag_id AND run_id = :run_id "
            "AND task_id = :task_id AND key = 'return_value' AND map_index = :map_index",
            dag_id=dag_id,
            run_id=run_id,
            task_id=task_id,
            map_index=map_index,
        )
        value = row["value"]
        while isinstance(value, str | bytes):
            value = json.loads(value)
        return value

    def consumed_events(self, dag_id: str, run_id: str) -> set[tuple[str, str, str]]:
        """(asset name, source dag, source task) of the asset events that started a run."""
        rows = self.rows(
            "SELECT a.name, e.source_dag_id, e.source_task_id FROM dag_run r"
            " JOIN dagrun_asset_event dre ON dre.dag_run_id = r.id"
            " JOIN asset_event e ON e.id = dre.event_id JOIN asset a ON a.id = e.asset_id"
            " WHERE r.dag_id = :dag_id AND r.run_id = :run_id",
            dag_id=dag_id,
            run_id=run_id,
        )
        return {(r["name"], r["source_dag_id"], r["source_task_id"]) for r in rows}

    def state_table(self) -> str:
        lines = []
        for run in self.runs():
            lines.append(f"{run['dag_id']} {run['run_id']} [{run['run_type']}] {run['state']}")
            for ti in self.task_instances(run["dag_id"], run["run_id"]):
                lines.append(f"    {ti['task_id']}[{ti['map_index']}] {ti['state']} {ti['pool']}")
        return "\n".join(lines)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # start_new_session: the group id is the leader's pid
