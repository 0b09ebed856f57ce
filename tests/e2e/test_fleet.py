"""The pipeline on a real distributed engine: a CeleryExecutor fleet of processes on this host.

PostgreSQL is Airflow's metadata database (and the warehouse, reached through the Airflow
connection ``stpipe_warehouse``), a password-protected ``redis-server`` of its own, configured
from docker/generate_env.py's secrets as Compose configures it, is the Celery broker, and ``airflow
api-server``, ``scheduler``, ``dag-processor``, ``triggerer`` and two Celery workers with their
own hostnames (``worker-a``, ``worker-b``) each run as a separate process, with the commands the
Compose services run (tests/deployment_components.py). ``docker/airflow-init.sh`` migrates the
database and creates the ``cnn`` pool with 2 slots, as the Compose ``airflow-init`` service does.

``media_ingest`` -> ``feature_extraction`` (6 shards) -> ``model_training`` (a grid of two
candidates) -> ``nightly_scoring`` run through the assets. Once each worker has finished a
shard, ``worker-b`` is SIGKILLed (its whole process group: the worker and the task it runs)
halfway through its next shard: the scheduler notices the missing heartbeats, and the retry
runs on ``worker-a``. ``worker-b`` then comes back (as a restarted container would) and the two
training candidates run at once, one per worker. Every run must end ``success``, and the
final tables must equal those of an undisturbed run of the same DAGs (``dag.test()`` in this
process, on a copy of the same media).

What ran where, and how long each phase took, is printed and written to
``test-artifacts/fleet/summary.json``; on failure the component and task logs are copied there.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from pipeline.config import Settings
from pipeline.features.store import FeatureStore
from pipeline.media.synthetic import generate_demo_corpus
from pipeline.registry.artifacts import read_metadata
from pipeline.warehouse.database import Warehouse
from tests.airflow_deployment import Deployment, free_port
from tests.conftest import REPO, pipeline_env
from tests.deployment_components import COMPONENTS
from tests.redis_server import RedisServer, password_redis

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.timeout(1800),
]

WORKERS = ("worker-a", "worker-b")
FLEET_DAGS = ("media_ingest", "feature_extraction", "model_training", "nightly_scoring")
#: The training run's parameters: two candidates, trained at once on the two workers.
TRAINING_CONF = {"epochs": 4, "batch_size": 8, "grid": {"lstm_units": [8, 16]}}
#: Where the summary (and, on failure, the logs) of the last fleet run are kept.
ARTIFACTS = Path(os.environ.get("STPIPE_TEST_ARTIFACTS", REPO / "test-artifacts")) / "fleet"
#: Seconds each phase may take on a busy 2-core machine.
PHASE_TIMEOUT = 600
UNFINISHED = ("queued", "running")


class Fleet:
    """The deployment plus what the test tracks about it."""

    def __init__(self, dep: Deployment, settings: Settings, warehouse_url: str) -> None:
        self.dep = dep
        self.settings = settings
        self.warehouse_url = warehouse_url
        self.timings: dict[str, float] = {}
        self.worker_ports = {name: free_port() for name in WORKERS}

    def start_worker(self, name: str) -> None:
        """``airflow celery worker`` as host ``name``: its own Celery node name, task hostname
        and log-server port (a container has its own)."""
        self.dep.start_command(
            name,
            [
                str(Path(sys.executable).with_name(COMPONENTS["airflow-worker"][0])),
                *COMPONENTS["airflow-worker"][1:],
                "--celery-hostname",
                f"{name}@fleet",
            ],
            env={
                "STPIPE_FLEET_HOSTNAME": name,
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.worker_ports[name]),
            },
        )

    def wait_worker_ready(self, name: str, timeout: float = 180) -> None:
        log = self.dep.logs / f"{name}.log"
        deadline = time.monotonic() + timeout
        while f"{name}@fleet ready" not in log.read_text(errors="replace"):
            self.dep.check_alive()
            assert time.monotonic() < deadline, f"Celery worker {name} did not start"
            time.sleep(1)

    def attempts(self, dag_id: str, task_id: str | None = None) -> list[dict[str, Any]]:
        """Every attempt of the DAG's task instances: finished tries from the history table,
        the current one from task_instance."""
        where = "dag_id = :dag_id" + (" AND task_id = :task_id" if task_id else "")
        columns = (
            "dag_id, run_id, task_id, map_index, try_number, state, hostname, start_date, end_date"
        )
        return self.dep.rows(
            f"SELECT {columns} FROM task_instance_history WHERE {where} UNION ALL "
            f"SELECT {columns} FROM task_instance WHERE {where} "
            "ORDER BY run_id, task_id, map_index, try_number",
            dag_id=dag_id,
            task_id=task_id,
        )

    def check_runs(self, allowed_failures: Collection[tuple[str, str, int]] = ()) -> None:
        """No run failed; no task instance failed except the attempts the test killed."""
        self.dep.check_alive()
        for run in self.dep.runs():
            assert run["state"] != "failed", f"{run['dag_id']} {run['run_id']} failed"
            for ti in self.dep.task_instances(run["dag_id"], run["run_id"]):
                key = (run["run_id"], ti["task_id"], ti["map_index"])
                if ti["state"] in ("failed", "upstream_failed", "removed") or (
                    ti["state"] == "up_for_retry" and key not in allowed_failures
                ):
                    raise AssertionError(f"{run['dag_id']} {run['run_id']}: {ti}")

    def wait_for(self, what: str, done: Callable[[], bool], **check: Any) -> float:
        started = time.monotonic()
        while not done():
            self.check_runs(**check)
            assert time.monotonic() - started < PHASE_TIMEOUT, f"{what}: not done in time"
            time.sleep(1)
        return time.monotonic() - started

    def shard_clips(self, run_id: str, map_index: int) -> set[str]:
        """The clips that extraction shard ``map_index`` of a run extracts (or finds cached)."""
        from pipeline.extract.plan import shard_of

        [shard] = [
            s
            for s in self.dep.return_value("feature_extraction", run_id, "plan_extraction")
            if s["shard"] == map_index
        ]
        with Warehouse.connect(self.warehouse_url) as wh:
            ok = {c.clip_id for c in wh.clips(status="ok")}
        return {c for c in ok if shard_of(c, shard["shards"]) == shard["shard"]}

    def runs_of(self, dag_id: str) -> list[dict[str, Any]]:
        return [r for r in self.dep.runs() if r["dag_id"] == dag_id]

    def settled(self) -> bool:
        """Every run has ended."""
        return all(r["state"] not in UNFINISHED for r in self.dep.runs())


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RedisServer]:
    with password_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def fleet(
    tmp_path: Path,
    broker: RedisServer,
    postgres_url: str,
    postgres_admin_url: str,
    make_settings: Callable[..., Settings],
) -> Iterator[Fleet]:
    settings = make_settings(
        data_dir=str(tmp_path / "fleet-data"), extract_clips_per_shard=5, extract_max_shards=16
    )
    # The warehouse: a second fresh PostgreSQL database, given to the tasks only as the Airflow
    # connection stpipe_warehouse (no PIPELINE_WAREHOUSE_URL in their environment).
    warehouse_db = f"stpipe_fleet_wh_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{warehouse_db}"'))
    warehouse = sa.engine.make_url(postgres_admin_url).set(database=warehouse_db)
    metadata = sa.engine.make_url(postgres_url).set(drivername="postgresql+psycopg2")
    queue = f"stpipe-fleet-{uuid.uuid4().hex[:8]}"  # nothing else on this Redis takes its tasks
    extra_env = {
        # The broker as in docker-compose.yml: a password-protected Redis of its own, whose
        # URL (with the password) the components read from a secret's file.
        "AIRFLOW__CELERY__BROKER_URL_CMD": f"cat {broker.broker_url_file}",
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata.render_as_string(hide_password=False),
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
        "AIRFLOW__CORE__PARALLELISM": "8",
        # A dead worker's task is noticed after 20 s without heartbeats (default 300) and
        # retried 3 s later (the DAGs take [core] default_task_retry_delay).
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "3",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.fleet_hostname.hostname",
        "PYTHONPATH": str(REPO),
        # The components and docker/airflow-init.sh call `airflow` and `stpipe` by name.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_CONN_STPIPE_WAREHOUSE": warehouse.set(drivername="postgresql").render_as_string(
            hide_password=False
        ),
        # docker/airflow-init.sh
        "STPIPE_CNN_POOL_SLOTS": "2",
        "AIRFLOW_ADMIN_USER": "fleet-admin",
        "AIRFLOW_ADMIN_PASSWORD": uuid.uuid4().hex,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "fleet-admin:admin",
    }
    dep = Deployment(
        tmp_path / "airflow", postgres_url, settings, "CeleryExecutor", extra_env=extra_env
    )
    assert "PIPELINE_WAREHOUSE_URL" not in dep.env
    fleet = Fleet(dep, settings, warehouse.render_as_string(hide_password=False))
    passed = False
    try:
        started = time.monotonic()
        init = subprocess.run(
            ["bash", str(REPO / "docker" / "airflow-init.sh")],
            env=dep.env,
            cwd=dep.home,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        (dep.logs / "airflow-init.log").write_text(init.stdout + init.stderr)
        assert init.returncode == 0, f"airflow-init failed:\n{init.stdout}\n{init.stderr}"
        fleet.timings["init_s"] = time.monotonic() - started
        for service in (
            "airflow-apiserver",
            "airflow-dag-processor",
            "airflow-scheduler",
            "airflow-triggerer",
        ):
            dep.start(service.removeprefix("airflow-"), *COMPONENTS[service][1:])
        for name in WORKERS:
            fleet.start_worker(name)
        deadline = time.monotonic() + 300
        while {r["dag_id"] for r in dep.rows("SELECT dag_id FROM dag WHERE NOT is_stale")} < set(
            FLEET_DAGS
        ):
            dep.check_alive()
            errors = dep.rows("SELECT filename, stacktrace FROM import_error")
            assert not errors, f"DAG import errors: {errors}"
            assert time.monotonic() < deadline, "the dag-processor did not parse the DAGs"
            time.sleep(1)
        dep.wait_for_api(timeout=300)
        _assert_api_needs_the_admin_password(dep)
        for name in WORKERS:
            fleet.wait_worker_ready(name)
        fleet.timings["deployment_up_s"] = time.monotonic() - started
        yield fleet
        passed = True
    finally:
        try:
            print(dep.state_table(), file=sys.stderr)
        except Exception as exc:  # the DB may be the problem; the logs still matter more
            print(f"<no state table: {exc}>", file=sys.stderr)
        dep.stop()
        if not passed:
            kept = dep.keep_logs(ARTIFACTS / datetime.now(UTC).strftime("failed-%Y%m%dT%H%M%S"))
            print(f"fleet logs kept in {kept}", file=sys.stderr)
            print(dep.report(), file=sys.stderr)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{warehouse_db}" WITH (FORCE)'))
        admin.dispose()


def test_a_celery_fleet_runs_the_pipeline_survives_a_killed_worker_and_matches_one_process(
    fleet: Fleet,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    airflow_db: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dep, settings = fleet.dep, fleet.settings
    media = tmp_path / "media"
    corpus = generate_demo_corpus(media, clips_per_class=6, unlabelled_per_class=1)
    clips = corpus.labelled + corpus.unlabelled
    shutil.copytree(media, settings.landing_root, dirs_exist_ok=True)

    # 1. Ingest and extraction, with worker-b killed halfway through its second shard.
    dep.cli(
        "dags", "unpause", "--treat-dag-id-as-regex", "--yes", "^(" + "|".join(FLEET_DAGS) + ")$"
    )
    dep.cli("dags", "trigger", "media_ingest", "--run-id", "manual__fleet")
    chain_started = time.monotonic()
    killed: dict[str, Any] = {}
    allowed: set[tuple[str, str, int]] = set()

    def kill_worker_b_mid_shard() -> bool:
        """Once each worker has finished a shard: SIGKILL worker-b halfway through its next
        shard (half the finished shards' median time), before that shard has committed any of
        its clips, so the retry must extract them all."""
        shards = fleet.attempts("feature_extraction", "extract_features")
        finished = [a for a in shards if a["state"] == "success"]
        running = [a for a in shards if a["state"] == "running" and a["hostname"] == "worker-b"]
        if not killed and {a["hostname"] for a in finished} >= set(WORKERS) and running:
            [attempt] = running
            elapsed = (datetime.now(UTC) - attempt["start_date"]).total_seconds()
            mine = fleet.shard_clips(attempt["run_id"], attempt["map_index"])
            committed = mine & FeatureStore.from_settings(settings).clip_ids()
            durations = [(a["end_date"] - a["start_date"]).total_seconds() for a in finished]
            halfway = statistics.median(durations) / 2  # shards commit their one part at the end
            if elapsed >= halfway and mine and not committed:
                dep.kill("worker-b")
                killed.update(attempt, killed_after_s=elapsed, clips=len(mine))
                allowed.add((attempt["run_id"], "extract_features", attempt["map_index"]))
        runs = fleet.runs_of("feature_extraction")
        return bool(runs) and all(r["state"] == "success" for r in runs) and fleet.settled()

    fleet.wait_for("ingest and extraction", kill_worker_b_mid_shard, allowed_failures=allowed)
    fleet.timings["ingest_and_extraction_s"] = time.monotonic() - chain_started
    assert killed, "worker-b never ran a shard, before committing it, after both had finished one"

    shards = fleet.attempts("feature_extraction", "extract_features")
    retried = [
        a
        for a in shards
        if (a["run_id"], a["map_index"]) == (killed["run_id"], killed["map_index"])
    ]
    # The killed try failed on worker-b (no heartbeat), the retry succeeded on worker-a.
    assert [(a["try_number"], a["hostname"]) for a in retried] == [(1, "worker-b"), (2, "worker-a")]
    assert retried[0]["state"] == "failed" and retried[1]["state"] == "success", retried
    # The killed try had committed nothing: the retry extracted every clip of the shard.
    retry = dep.return_value(
        "feature_extraction", killed["run_id"], "extract_features", killed["map_index"]
    )
    assert retry["extracted"] == killed["clips"] > 0 and retry["cached"] == 0, retry
    fleet.timings["kill_to_retry_success_s"] = (
        retried[1]["end_date"] - retried[0]["start_date"]
    ).total_seconds() - killed["killed_after_s"]
    first_run = min(fleet.runs_of("feature_extraction"), key=lambda r: r["start_date"])
    mapped = [a for a in shards if a["run_id"] == first_run["run_id"]]
    assert len({a["map_index"] for a in mapped}) >= 4, mapped
    succeeded_on = {a["hostname"] for a in mapped if a["state"] == "success"}
    assert succeeded_on == set(WORKERS), mapped
    summary = dep.return_value("feature_extraction", first_run["run_id"], "summarize_extraction")
    # What the killed try wrote before it died is kept (parts are committed whole): its retry
    # finds those clips cached.
    assert summary["extracted"] + summary["cached"] == clips, summary
    assert summary["quarantined"] == 0, summary

    # 2. worker-b comes back; the two training candidates run at once, one on each worker, and
    # promoting the better one triggers scoring.
    fleet.start_worker("worker-b")
    fleet.wait_worker_ready("worker-b")
    dep.cli(
        "dags",
        "trigger",
        "model_training",
        "--run-id",
        "manual__fleet",
        "--conf",
        json.dumps(TRAINING_CONF),
    )

    def scored() -> bool:
        training = fleet.runs_of("model_training")
        scoring = [
            r
            for r in fleet.runs_of("nightly_scoring")
            if ("stpipe_models", "model_training", "promote_model")
            in dep.consumed_events("nightly_scoring", r["run_id"])
        ]
        return (
            bool(training)
            and training[0]["state"] == "success"
            and bool(scoring)
            and fleet.settled()
        )

    fleet.timings["training_and_scoring_s"] = fleet.wait_for(
        "training and scoring", scored, allowed_failures=allowed
    )
    candidates = [
        a for a in fleet.attempts("model_training", "train_candidate") if a["state"] == "success"
    ]
    assert len(candidates) == 2 and {a["hostname"] for a in candidates} == set(WORKERS), candidates
    first, second = sorted(candidates, key=lambda a: a["start_date"])
    assert second["start_date"] < first["end_date"], "the two candidates did not overlap"

    # 3. Every run ended success; what ran where.
    runs = dep.runs()
    assert all(r["state"] == "success" for r in runs), runs
    fleet.timings["total_s"] = time.monotonic() - chain_started
    ran_where = _ran_where(fleet)
    _write_summary(fleet, killed, ran_where)

    # 4. The tables equal those of an undisturbed run of the same DAGs in one process.
    assert not Path(settings.data_dir, "warehouse.db").exists()  # the connection was used
    reference = _undisturbed_run(media, make_settings, tmp_path, monkeypatch)
    with Warehouse.connect(fleet.warehouse_url) as wh:
        fleet_tables = _tables(wh)
    with Warehouse.connect(reference.warehouse) as wh:
        reference_tables = _tables(wh)
    assert fleet_tables["media_files"] == reference_tables["media_files"]
    assert fleet_tables["models"] == reference_tables["models"]
    assert fleet_tables["predictions"].keys() == reference_tables["predictions"].keys()
    assert len(fleet_tables["predictions"]) == clips
    for clip_id, (label, confidence) in fleet_tables["predictions"].items():
        ref_label, ref_confidence = reference_tables["predictions"][clip_id]
        assert label == ref_label, clip_id
        assert confidence == pytest.approx(ref_confidence, abs=1e-3), clip_id
    _assert_same_features(settings, reference)


def _assert_api_needs_the_admin_password(dep: Deployment) -> None:
    """The API refuses a request without a token, and airflow-init's admin password gets one."""
    base = f"http://127.0.0.1:{dep.api_port}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}/api/v2/dags", timeout=30)
    assert refused.value.code in (401, 403)
    login = urllib.request.Request(
        f"{base}/auth/token",
        data=json.dumps(
            {"username": "fleet-admin", "password": dep.env["AIRFLOW_ADMIN_PASSWORD"]}
        ).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(login, timeout=30) as response:
        token = json.loads(response.read())["access_token"]
    listing = urllib.request.Request(
        f"{base}/api/v2/dags", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(listing, timeout=30) as response:
        dag_ids = {d["dag_id"] for d in json.loads(response.read())["dags"]}
    assert set(FLEET_DAGS) <= dag_ids


def _ran_where(fleet: Fleet) -> list[dict[str, Any]]:
    rows = []
    for dag_id in FLEET_DAGS:
        for a in fleet.attempts(dag_id):
            if a["start_date"] is None:
                continue
            rows.append(
                {
                    "dag_id": dag_id,
                    "run_id": a["run_id"],
                    "task": a["task_id"] + (f"[{a['map_index']}]" if a["map_index"] >= 0 else ""),
                    "try": a["try_number"],
                    "state": a["state"],
                    "worker": a["hostname"],
                    "seconds": round((a["end_date"] - a["start_date"]).total_seconds(), 1)
                    if a["end_date"]
                    else None,
                }
            )
    return rows


def _write_summary(fleet: Fleet, killed: dict[str, Any], ran_where: list[dict[str, Any]]) -> None:
    summary = {
        "timings_s": {k: round(v, 1) for k, v in fleet.timings.items()},
        "killed": {
            "worker": "worker-b",
            "task": f"extract_features[{killed['map_index']}]",
            "killed_after_s": round(killed["killed_after_s"], 1),
        },
        "attempts": ran_where,
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["timings_s"]), summary["killed"])
    for row in ran_where:
        print(
            f"{row['dag_id']:20} {row['task']:28} try {row['try']} {row['state']:8} "
            f"{row['worker']:10} {row['seconds']} s"
        )


def _undisturbed_run(
    media: Path,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """The same DAGs with dag.test() in this process, on a copy of the same media."""
    from airflow.dag_processing.dagbag import DagBag

    reference = make_settings(
        data_dir=str(tmp_path / "reference-data"), extract_clips_per_shard=5, extract_max_shards=16
    )
    shutil.copytree(media, reference.landing_root, dirs_exist_ok=True)
    for key, value in pipeline_env(reference).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AIRFLOW_CONN_STPIPE_WAREHOUSE", raising=False)
    bag = DagBag(dag_folder=str(REPO / "dags"))
    for dag_id, conf in (
        ("media_ingest", None),
        ("feature_extraction", None),
        ("model_training", TRAINING_CONF),
        ("nightly_scoring", None),
    ):
        run = bag.get_dag(dag_id).test(run_conf=conf)
        assert run.state == "success", f"reference {dag_id} ended {run.state}"
    return reference


def _tables(wh: Warehouse) -> dict[str, Any]:
    """What an analyst sees, without what differs by run (times, run ids, version names)."""
    media = sorted(
        (r["clip_id"], r["modality"], r["label"], r["split"], r["status"])
        for r in wh.query("SELECT * FROM media_files")
    )
    production = wh.production_model()
    assert production is not None
    models = sorted(
        (
            json.dumps(read_metadata(m)["params"], sort_keys=True),
            m.stage,
            round(float(m.metrics.get("val_macro_f1") or 0.0), 3),
        )
        for m in wh.models()
    )
    predictions = {
        r["clip_id"]: (r["predicted_label"], float(r["confidence"]))
        for r in wh.query(
            "SELECT clip_id, predicted_label, confidence FROM predictions WHERE model_version = :v",
            {"v": production.model_version},
        )
    }
    return {"media_files": media, "models": models, "predictions": predictions}


def _assert_same_features(fleet_settings: Settings, reference: Settings) -> None:
    fleet_store = FeatureStore.from_settings(fleet_settings)
    reference_store = FeatureStore.from_settings(reference)
    assert fleet_store.settings_hash == reference_store.settings_hash
    ours, theirs = fleet_store.read_segments(), reference_store.read_segments()
    assert ours.keys() == theirs.keys()
    for clip_id, segments in ours.items():
        assert len(segments) == len(theirs[clip_id]), clip_id
        for mine, ref in zip(segments, theirs[clip_id], strict=True):
            for stream, array in mine.streams.items():
                np.testing.assert_allclose(array, ref.streams[stream], rtol=1e-4, atol=1e-5)
