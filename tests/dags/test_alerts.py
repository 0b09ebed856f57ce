"""Alerts wired into the DAGs: nothing attached when unset; with the variables set, every DAG and
task carries the notifiers and nightly_scoring a deadline; a real failed dag.test() run mails
the SMTP sink and posts to the webhook started here, and its deadline, missed, reaches both."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.alerts_receivers import Mailbox, Receivers, only, receivers
from tests.conftest import REPO


def _fresh_dag_bag(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The DAG folder parsed again, so _shared reads the environment set by the test (the
    session's dag_bag parsed it without alert variables)."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.delitem(sys.modules, "_shared", raising=False)
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag


@pytest.fixture
def alerting(monkeypatch: pytest.MonkeyPatch, airflow_db: str) -> Iterator[Receivers]:
    with receivers() as found:
        for key, value in found.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("PIPELINE_SCORING_DEADLINE_MINUTES", "45")
        yield found


def test_without_alert_settings_no_callback_and_no_deadline_is_attached(dag_bag: Any) -> None:
    for dag_id in dag_bag.dag_ids:
        dag = dag_bag.get_dag(dag_id)
        assert not dag.on_failure_callback, dag_id
        assert not dag.deadline, dag_id
        for task in dag.tasks:
            assert not task.on_failure_callback, (dag_id, task.task_id)


def test_with_alert_settings_every_dag_and_task_alerts_and_scoring_has_a_deadline(
    alerting: Receivers, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.serialization.serialized_objects import DagSerialization

    from pipeline.monitoring.notifiers import EmailNotifier, WebhookNotifier, deadline_missed

    bag = _fresh_dag_bag(monkeypatch)
    assert "nightly_scoring" in bag.dag_ids
    for dag_id in bag.dag_ids:  # every DAG, a new one included
        dag = bag.get_dag(dag_id)
        kinds = [type(n) for n in dag.on_failure_callback]
        assert kinds == [EmailNotifier, WebhookNotifier], dag_id
        for task in dag.tasks:
            assert [type(n) for n in task.on_failure_callback] == kinds, task.task_id
    [email, webhook] = bag.get_dag("nightly_scoring").on_failure_callback
    assert email.to == ["ops@example.com", "ml@example.com"]
    assert webhook.url == alerting.webhook_url

    scoring = bag.get_dag("nightly_scoring")
    [deadline] = scoring.deadline if isinstance(scoring.deadline, list) else [scoring.deadline]
    assert type(deadline.reference).__name__ == "DagRunLogicalDateDeadline"  # 02:00 + interval
    assert deadline.interval == timedelta(minutes=45)
    assert deadline.callback.path == f"{deadline_missed.__module__}.deadline_missed"
    assert deadline.callback.kwargs == {}  # no receiver (nor secret) in the serialized DAG
    assert "deadline" in DagSerialization.to_dict(scoring)["dag"]  # it serializes
    for dag_id in set(bag.dag_ids) - {"nightly_scoring"}:
        assert not bag.get_dag(dag_id).deadline, dag_id


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_failed_night_mails_and_posts_and_its_deadline_reaches_both_receivers(
    alerting: Receivers, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """nightly_scoring for real (dag.test) with a warehouse that cannot be opened: the task
    failure and the DAG failure each reach both receivers, naming the DAG, task and run."""
    from airflow.models.dagrun import DagRun
    from airflow.models.deadline import Deadline
    from airflow.models.deadline_alert import DeadlineAlert as DeadlineAlertModel
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.settings import Session
    from airflow.triggers.callback import CallbackTrigger
    from sqlalchemy import select

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the warehouse's folder should be")
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PIPELINE_WAREHOUSE_URL", f"sqlite:///{blocker}/warehouse.db")

    dag = _fresh_dag_bag(monkeypatch).get_dag("nightly_scoring")
    for task in dag.tasks:  # fail at once instead of retrying for minutes
        task.retries = 0
    dag_run = dag.test()
    assert dag_run.state == "failed"

    alerting.wait_for(emails=2, posts=2)
    posts = alerting.webhook.posts
    assert sorted(p["kind"] for p in posts) == ["dag_failed", "task_failed"]
    task_post = only(posts, lambda p: p["kind"] == "task_failed")
    assert (task_post["dag_id"], task_post["task_id"]) == ("nightly_scoring", "score_new_clips")
    assert task_post["run_id"] == dag_run.run_id
    assert task_post["logical_date"] == dag_run.logical_date.isoformat()
    assert "not-a-folder" in task_post["error"] and task_post["error"] in task_post["text"]
    dag_post = only(posts, lambda p: p["kind"] == "dag_failed")
    assert (dag_post["dag_id"], dag_post["run_id"]) == ("nightly_scoring", dag_run.run_id)

    subjects = sorted(m["Subject"] for m in alerting.mailbox.messages)
    assert subjects == [
        "[stpipe] DAG run nightly_scoring failed (last failed task: score_new_clips)",
        "[stpipe] task nightly_scoring.score_new_clips failed (try 1)",
    ]
    task_mail = only(alerting.mailbox.messages, lambda m: "task nightly" in m["Subject"])
    assert dag_run.run_id in Mailbox.body(task_mail)

    # Airflow recorded the run's deadline: its logical date + PIPELINE_SCORING_DEADLINE_MINUTES;
    # the DAG the scheduler reads refers to it by id (what ends a successful run's deadline).
    session = Session()
    [alert_id] = SerializedDagModel.get_dag("nightly_scoring", session=session).deadline
    stored = DeadlineAlertModel.get_by_id(alert_id, session=session)
    assert (stored.name, stored.interval["__data__"]) == ("scoring_finished", 45 * 60)
    run = session.scalars(select(DagRun).where(DagRun.run_id == dag_run.run_id)).one()
    [deadline] = session.scalars(select(Deadline).where(Deadline.dagrun_id == run.id)).all()
    assert deadline.deadline_time == run.logical_date + timedelta(minutes=45)
    # Missed: the scheduler's handle_miss queues the triggerer callback; run it as the
    # triggerer does (CallbackTrigger) and both receivers hear of it.
    deadline.handle_miss(session)
    callback = deadline.callback
    trigger = CallbackTrigger(callback.data["path"], dict(callback.data["kwargs"]))

    async def run_trigger() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    events = asyncio.run(run_trigger())
    session.rollback()
    session.close()
    assert events[-1]["state"] == "success", events
    alerting.wait_for(emails=3, posts=3)
    late = only(alerting.webhook.posts, lambda p: p["kind"] == "deadline_missed")
    assert (late["dag_id"], late["run_id"]) == ("nightly_scoring", dag_run.run_id)
    assert len(alerting.mailbox.messages) == 3


def test_the_health_check_follows_scoring_even_a_skipped_one_beside_the_report(
    dag_bag: Any,
) -> None:
    dag = dag_bag.get_dag("nightly_scoring")
    health = dag.get_task("check_health")
    assert health.upstream_task_ids == {"score_new_clips"}
    assert health.downstream_task_ids == set()  # a failed alert never blocks the report
    assert health.trigger_rule == "none_failed"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_quarantine_jump_in_a_real_run_alerts_from_check_health(
    alerting: Receivers, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """nightly_scoring for real with no model (scoring skips) on a warehouse where most of
    today's files were quarantined: check_health sends the alert from inside the run."""
    from pipeline.config import load_settings
    from pipeline.warehouse.database import Warehouse
    from tests.unit.test_warehouse import _clip

    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path / "data"))
    # Airflow 3.3.2's dag.test() cannot end a successful run that has a deadline (it looks the
    # deadline up by its definition, not its id; the failed run above never gets there).
    monkeypatch.setenv("PIPELINE_SCORING_DEADLINE_MINUTES", "0")
    with Warehouse.connect(load_settings().warehouse) as wh:
        wh.add_clip(_clip("fine"))
        for i in range(3):
            wh.add_clip(_clip(f"bad{i}", status="quarantined", error="no audio stream"))

    dag = _fresh_dag_bag(monkeypatch).get_dag("nightly_scoring")
    dag_run = dag.test()
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert states == {
        "score_new_clips": "skipped",
        "write_daily_report": "success",
        "check_health": "success",
    }

    alerting.wait_for(emails=1, posts=1)
    [post] = alerting.webhook.posts
    assert post["kind"] == "health" and post["summary"].endswith("quarantine jump")
    assert (post["dag_id"], post["task_id"], post["run_id"]) == (
        "nightly_scoring",
        "check_health",
        dag_run.run_id,
    )
    assert "3 of 4 files (75%)" in post["details"][0]
    [message] = alerting.mailbox.messages
    assert message["Subject"] == post["text"].splitlines()[0].join(["[stpipe] ", ""])
