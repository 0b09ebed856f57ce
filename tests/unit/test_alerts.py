"""Alerts: what they say, where they go, and delivery to real receivers started here (an SMTP
sink and an HTTP server). The DAG wiring and a real failed dag.test() run are in
tests/dags/test_alerts.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.errors import ConfigError
from pipeline.monitoring.alerts import (
    MAX_ERROR_CHARS,
    Alert,
    AlertRoutes,
    alert_from_context,
    send_alert,
)
from tests.alerts_receivers import Mailbox, Receivers, receivers

HOSTILE = "<script>alert(1)</script> & {{ dag.dag_id }}\nSubject: forged"


@pytest.fixture
def sinks(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receivers]:
    with receivers() as found:
        for key, value in found.env().items():
            monkeypatch.setenv(key, value)
        yield found


def _task_context(exception: BaseException) -> dict[str, Any]:
    """The parts of a task failure callback's context the alert reads (a real one is used in
    tests/dags/test_alerts.py)."""
    return {
        "dag": SimpleNamespace(dag_id="nightly_scoring"),
        "run_id": "scheduled__2026-03-04T02:00:00+00:00",
        "logical_date": datetime(2026, 3, 4, 2, tzinfo=UTC),
        "ti": SimpleNamespace(task_id="score_new_clips", map_index=-1, try_number=3),
        "exception": exception,
    }


def test_a_task_alert_names_the_dag_task_run_and_date_and_says_what_to_do() -> None:
    alert = alert_from_context(_task_context(RuntimeError("warehouse unreachable")))
    assert alert.kind == "task_failed"
    assert alert.subject == "[stpipe] task nightly_scoring.score_new_clips failed (try 3)"
    text = alert.text()
    for expected in (
        "DAG: nightly_scoring",
        "task: score_new_clips",
        "run: scheduled__2026-03-04T02:00:00+00:00",
        "logical date: 2026-03-04T02:00:00+00:00",
        "RuntimeError: warehouse unreachable",
        "clear the task",
    ):
        assert expected in text, expected
    assert "http" not in text  # the hint is in words: no link to a UI we do not know


def test_a_dag_alert_is_told_apart_by_its_reason() -> None:
    context = {**_task_context(RuntimeError("x")), "reason": "task_failure"}
    del context["exception"]
    alert = alert_from_context(context)
    assert alert.kind == "dag_failed"
    assert alert.summary == "DAG run nightly_scoring failed (last failed task: score_new_clips)"
    assert alert.error == "task_failure"


def test_the_error_is_escaped_in_html_cut_to_size_and_the_subject_stays_one_line() -> None:
    huge = RuntimeError(HOSTILE + "x" * 10_000)
    alert = Alert(kind="task_failed", summary=f"task {HOSTILE} failed", error=str(huge))
    assert alert.error is not None and len(alert.error) <= MAX_ERROR_CHARS
    assert alert.error.endswith("more characters)")
    html = alert.html()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "\n" not in alert.subject and "\r" not in alert.subject
    assert json.loads(json.dumps(alert.payload()))["error"] == alert.error


def test_routes_are_off_when_nothing_is_set() -> None:
    routes = AlertRoutes.from_env({})
    assert not routes.enabled
    assert routes.scoring_deadline == timedelta(minutes=120)


def test_routes_read_recipients_webhook_connection_and_deadline() -> None:
    routes = AlertRoutes.from_env(
        {
            "PIPELINE_ALERT_EMAIL": " ops@example.com,, ml@example.com ",
            "PIPELINE_ALERT_SMTP_CONN_ID": "smtp_ops",
            "PIPELINE_ALERT_WEBHOOK_CONN_ID": "stpipe_webhook",
            "PIPELINE_SCORING_DEADLINE_MINUTES": "90",
        }
    )
    assert routes.enabled
    assert routes.email_to == ("ops@example.com", "ml@example.com")
    assert routes.smtp_conn_id == "smtp_ops"
    assert routes.webhook_conn_id == "stpipe_webhook" and routes.webhook_url is None
    assert routes.scoring_deadline == timedelta(minutes=90)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PIPELINE_ALERT_EMAIL", "ops at example.com"),
        ("PIPELINE_ALERT_WEBHOOK_URL", "hooks.example.com/x"),
        ("PIPELINE_SCORING_DEADLINE_MINUTES", "0"),
        ("PIPELINE_SCORING_DEADLINE_MINUTES", "two hours"),
    ],
)
def test_a_malformed_route_is_a_config_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        AlertRoutes.from_env({name: value})


def test_the_email_notifier_delivers_through_the_smtp_provider(sinks: Receivers) -> None:
    from pipeline.monitoring.notifiers import EmailNotifier

    notifier = EmailNotifier(
        ["ops@example.com", "ml@example.com"],
        from_email="stpipe@example.com",
        smtp_conn_id="smtp_default",
    )
    notifier.send(alert_from_context(_task_context(RuntimeError(HOSTILE))))

    [message] = sinks.mailbox.messages
    assert sinks.mailbox.recipients == [["ops@example.com", "ml@example.com"]]
    assert message["Subject"] == "[stpipe] task nightly_scoring.score_new_clips failed (try 3)"
    assert message["From"] == "stpipe@example.com"
    body = Mailbox.body(message)
    assert "score_new_clips" in body and "scheduled__2026-03-04T02:00:00+00:00" in body
    assert "&lt;script&gt;" in body and "<script>" not in body
    assert "{{ dag.dag_id }}" in body  # shown as written, not rendered as a template


def test_the_webhook_notifier_posts_the_alert_as_json(sinks: Receivers) -> None:
    from pipeline.monitoring.notifiers import WebhookNotifier

    WebhookNotifier(url=sinks.webhook_url).send(
        alert_from_context(_task_context(ValueError("bad")))
    )

    [post] = sinks.webhook.posts
    assert post["source"] == "stpipe" and post["kind"] == "task_failed"
    assert (post["dag_id"], post["task_id"]) == ("nightly_scoring", "score_new_clips")
    assert post["run_id"] == "scheduled__2026-03-04T02:00:00+00:00"
    assert post["logical_date"] == "2026-03-04T02:00:00+00:00"
    assert post["error"] == "ValueError: bad"
    assert "clear the task" in post["hint"] and "ValueError: bad" in post["text"]


def test_the_webhook_url_can_come_from_an_airflow_connection(
    sinks: Receivers, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.monitoring.notifiers import WebhookNotifier

    monkeypatch.setenv(
        "AIRFLOW_CONN_STPIPE_WEBHOOK",
        json.dumps({"conn_type": "http", "host": sinks.webhook_url}),
    )
    WebhookNotifier(conn_id="stpipe_webhook").send(Alert(kind="health", summary="drift"))
    assert [p["summary"] for p in sinks.webhook.posts] == ["drift"]
    assert sinks.webhook.paths == ["/hooks/stpipe"]


def test_a_receiver_that_fails_does_not_stop_the_others(sinks: Receivers) -> None:
    from pipeline.monitoring.notifiers import notifiers

    sinks.webhook.status = 500
    failures = send_alert(Alert(kind="health", summary="drift"), notifiers(AlertRoutes.from_env()))
    assert len(failures) == 1 and "HTTP 500" in failures[0]
    assert len(sinks.mailbox.messages) == 1  # the email went out all the same


def test_the_deadline_callback_runs_in_airflows_triggerer_callback_and_reaches_both(
    sinks: Receivers,
) -> None:
    """Airflow's CallbackTrigger (what the triggerer runs for a missed deadline), with the
    context the scheduler gives it: the run as JSON and the deadline."""
    from airflow.triggers.callback import CallbackTrigger

    from pipeline.monitoring.notifiers import deadline_missed

    context = {
        "dag_run": {
            "dag_id": "nightly_scoring",
            "dag_run_id": "scheduled__2026-03-04T02:00:00+00:00",
            "logical_date": "2026-03-04T02:00:00Z",
            "state": "running",
        },
        "deadline": {"id": "0", "deadline_time": datetime(2026, 3, 4, 4, tzinfo=UTC)},
    }
    path = f"{deadline_missed.__module__}.{deadline_missed.__qualname__}"
    trigger = CallbackTrigger(callback_path=path, callback_kwargs={"context": context})

    async def run() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    events = asyncio.run(run())
    assert [e["state"] for e in events] == ["running", "success"], events
    assert events[-1]["body"] == []  # no receiver failed

    [post] = sinks.webhook.posts
    assert post["kind"] == "deadline_missed"
    assert post["summary"] == (
        "DAG run nightly_scoring missed its deadline (2026-03-04T04:00:00+00:00)"
    )
    assert post["run_id"] == "scheduled__2026-03-04T02:00:00+00:00"
    assert "run state at the deadline: running" in post["details"]
    [message] = sinks.mailbox.messages
    assert "missed its deadline" in message["Subject"]
