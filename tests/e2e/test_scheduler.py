"""The DAGs under a real Airflow 3 deployment, not ``dag.test()``: metadata DB on PostgreSQL,
``airflow api-server`` (execution API), ``airflow scheduler`` (LocalExecutor) and
``airflow dag-processor`` as subprocesses, the ``cnn`` pool created with the CLI.

Triggering ``media_ingest`` by hand must chain through the assets: its ``stpipe_media_files``
event starts ``feature_extraction`` (mapped ``extract_features`` in the ``cnn`` pool, one slot, so
the shards run one after another), whose ``stpipe_features`` event starts ``nightly_scoring``,
which skips (no production model yet).

Unpausing a cron DAG with ``catchup=False`` also creates a run for its latest past cron time, so
``media_ingest`` and ``nightly_scoring`` get one ``scheduled`` run each besides the ones this test
is about; every run, whatever its type, must end ``success``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.features.store import FeatureStore
from pipeline.media.synthetic import generate_demo_corpus
from pipeline.warehouse.database import Warehouse
from tests.airflow_deployment import Deployment

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(900)]

CHAINED_DAGS = ("media_ingest", "feature_extraction", "nightly_scoring")
ALL_DAGS = (*CHAINED_DAGS, "model_training")
#: Seconds for the whole chain once media_ingest is triggered.
CHAIN_TIMEOUT = 360
#: Task states that mean something went wrong (retries are minutes apart: fail fast instead).
BAD_TI_STATES = {"failed", "up_for_retry", "upstream_failed", "removed"}


@pytest.fixture
def e2e_settings(make_settings: Callable[..., Settings]) -> Settings:
    """The suite's small settings, with 8 clips per extraction shard: the corpus makes 2."""
    return make_settings(extract_clips_per_shard=8)


@pytest.fixture
def deployment(tmp_path: Path, postgres_url: str, e2e_settings: Settings) -> Iterator[Deployment]:
    """Airflow migrated, the pool created, the components started and the DAGs parsed."""
    dep = Deployment(tmp_path / "airflow", postgres_url, e2e_settings)
    try:
        dep.cli("db", "migrate", timeout=300)
        dep.cli("pools", "set", "cnn", "1", "VGG-16")
        dep.start("api-server", "api-server", "--port", str(dep.api_port), "--apps", "execution")
        dep.start("dag-processor", "dag-processor")
        dep.start("scheduler", "scheduler")
        deadline = time.monotonic() + 180
        while True:
            dep.check_alive()
            parsed = dep.rows("SELECT dag_id FROM dag WHERE NOT is_stale")
            if {r["dag_id"] for r in parsed} >= set(ALL_DAGS):
                break
            errors = dep.rows("SELECT filename, stacktrace FROM import_error")
            assert not errors, f"DAG import errors: {errors}"
            assert time.monotonic() < deadline, "the dag-processor did not parse the DAGs"
            time.sleep(1)
        dep.wait_for_api()
        print(f"deployment up in {time.monotonic() - dep.started:.0f} s")
        yield dep
    finally:
        # pytest shows what the teardown prints only when the test failed or errored.
        try:
            print(dep.state_table(), file=sys.stderr)
        except Exception as exc:  # the DB may be the problem; the logs still matter more
            print(f"<no state table: {exc}>", file=sys.stderr)
        stopping = time.monotonic()
        dep.stop()
        print(f"deployment stopped in {time.monotonic() - stopping:.0f} s")
        print(dep.report(), file=sys.stderr)


def test_media_ingest_chains_through_assets_under_a_real_scheduler(
    deployment: Deployment, e2e_settings: Settings
) -> None:
    dep, settings = deployment, e2e_settings
    corpus = generate_demo_corpus(
        Path(settings.landing_root), clips_per_class=3, unlabelled_per_class=1
    )
    clips = corpus.labelled + corpus.unlabelled
    # No warehouse set-up here on purpose: unpausing starts the scheduled media_ingest and
    # nightly_scoring runs at once, and both tasks create the new SQLite warehouse together
    # (Warehouse.migrate must serialise them).
    dep.cli(
        "dags",
        "unpause",
        "--treat-dag-id-as-regex",
        "--yes",
        "^(" + "|".join(CHAINED_DAGS) + ")$",
    )
    dep.cli("dags", "trigger", "media_ingest", "--run-id", "manual__e2e")

    started = time.monotonic()
    deadline = started + CHAIN_TIMEOUT
    while True:
        dep.check_alive()
        runs = dep.runs()
        for run in runs:
            assert run["state"] != "failed", f"{run['dag_id']} {run['run_id']} failed"
            bad = [
                ti
                for ti in dep.task_instances(run["dag_id"], run["run_id"])
                if ti["state"] in BAD_TI_STATES
            ]
            assert not bad, f"{run['dag_id']} {run['run_id']}: {bad}"
        done = {(r["dag_id"], r["run_type"]) for r in runs if r["state"] == "success"}
        unfinished = [r for r in runs if r["state"] not in ("success", "failed")]
        if {
            ("media_ingest", "manual"),
            ("feature_extraction", "asset_triggered"),
            ("nightly_scoring", "asset_triggered"),
        } <= done and not unfinished:
            break
        assert time.monotonic() < deadline, f"the chain did not finish in {CHAIN_TIMEOUT} s"
        time.sleep(2)
    print(f"chain done in {time.monotonic() - started:.0f} s")

    by_dag: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_dag.setdefault(run["dag_id"], []).append(run)
    assert "model_training" not in by_dag  # manual only, and left paused

    # media_ingest: the manual run and the scheduled one (if any) ingested the corpus between
    # them (whichever ran first added every clip) and each emitted stpipe_media_files.
    [manual] = [r for r in by_dag["media_ingest"] if r["run_type"] == "manual"]
    assert manual["run_id"] == "manual__e2e"
    assert {r["run_type"] for r in by_dag["media_ingest"]} <= {"manual", "scheduled"}
    ingests = [
        dep.return_value("media_ingest", r["run_id"], "ingest_media")
        for r in by_dag["media_ingest"]
    ]
    assert sum(i["added"] for i in ingests) == clips, ingests
    assert sum(i["quarantined"] for i in ingests) == corpus.corrupt, ingests

    # feature_extraction: only ever asset-triggered; the first run extracted every clip, with
    # the mapped extract_features tasks in the cnn pool (one slot: no two ran at once).
    extraction_runs = by_dag["feature_extraction"]
    assert {r["run_type"] for r in extraction_runs} == {"asset_triggered"}
    first = extraction_runs[0]
    events = dep.consumed_events("feature_extraction", first["run_id"])
    assert events == {("stpipe_media_files", "media_ingest", "ingest_media")}
    summary = dep.return_value("feature_extraction", first["run_id"], "summarize_extraction")
    assert summary["extracted"] == clips, summary
    tis = dep.task_instances("feature_extraction", first["run_id"])
    mapped = [ti for ti in tis if ti["task_id"] == "extract_features"]
    assert len(mapped) == 2, tis  # 16 clips, 8 per shard
    assert sorted(ti["map_index"] for ti in mapped) == [0, 1]
    assert all(ti["pool"] == "cnn" and ti["state"] == "success" for ti in mapped), mapped
    assert all(ti["pool"] == "default_pool" for ti in tis if ti["task_id"] != "extract_features")
    earlier, later = sorted(mapped, key=lambda ti: ti["start_date"])
    assert earlier["end_date"] <= later["start_date"], mapped

    # nightly_scoring: started by stpipe_features, skipped for want of a production model.
    triggered = [r for r in by_dag["nightly_scoring"] if r["run_type"] == "asset_triggered"]
    assert triggered
    for run in triggered:
        assert dep.consumed_events("nightly_scoring", run["run_id"]) == {
            ("stpipe_features", "feature_extraction", "summarize_extraction")
        }
    assert {r["run_type"] for r in by_dag["nightly_scoring"]} <= {"asset_triggered", "scheduled"}
    for run in by_dag["nightly_scoring"]:
        states = {
            ti["task_id"]: ti["state"]
            for ti in dep.task_instances("nightly_scoring", run["run_id"])
        }
        # The daily report is written, and the health checked, after a skipped scoring too.
        assert states == {
            "score_new_clips": "skipped",
            "write_daily_report": "success",
            "check_health": "success",
        }, run
    [summarize] = [ti for ti in tis if ti["task_id"] == "summarize_extraction"]
    assert triggered[0]["start_date"] >= summarize["end_date"]

    # What the tasks wrote, seen from outside Airflow.
    with Warehouse.connect(settings.warehouse) as wh:
        status = {
            r["status"]: r["n"]
            for r in wh.query("SELECT status, COUNT(*) AS n FROM media_files GROUP BY status")
        }
        [labelled] = wh.query("SELECT COUNT(*) AS n FROM media_files WHERE label IS NOT NULL")
        [predictions] = wh.query("SELECT COUNT(*) AS n FROM predictions")
    assert status == {"ok": clips, "quarantined": corpus.corrupt}
    assert labelled["n"] == corpus.labelled
    assert predictions["n"] == 0
    with Warehouse.connect(settings.warehouse) as wh:
        ok_ids = {c.clip_id for c in wh.clips(status="ok")}
    assert FeatureStore.from_settings(settings).clip_ids() == ok_ids
