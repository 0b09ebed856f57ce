"""Alerts: what they say, where they go, delivery to real receivers started here (an SMTP sink
and an HTTP server), and the nightly health check on a seeded SQLite warehouse. The DAG wiring
and a real failed dag.test() run are in tests/dags/test_alerts.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from pipeline.config import Settings
from pipeline.errors import ConfigError, InfrastructureError
from pipeline.monitoring.alerts import (
    MAX_ERROR_CHARS,
    Alert,
    AlertRoutes,
    alert_from_context,
    send_alert,
)
from pipeline.monitoring.health import HealthReport, HealthThresholds, quarantine_check
from pipeline.stages import run_health_check
from pipeline.warehouse.analytics import QuarantineDay
from pipeline.warehouse.database import Warehouse
from tests.alerts_receivers import Mailbox, Receivers, receivers
from tests.unit.test_warehouse import _clip, _prediction, _register

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
    off = AlertRoutes.from_env({"PIPELINE_SCORING_DEADLINE_MINUTES": "0"})
    assert off.scoring_deadline is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PIPELINE_ALERT_EMAIL", "ops at example.com"),
        ("PIPELINE_ALERT_WEBHOOK_URL", "hooks.example.com/x"),
        ("PIPELINE_SCORING_DEADLINE_MINUTES", "-5"),
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


# The health check ---------------------------------------------------------------------------

TODAY = date(2026, 11, 28)


def _at(day: date, hour: int = 1) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def _files(wh: Warehouse, day: date, ok: int, quarantined: int, reason: str = "no streams") -> None:
    """``ok`` + ``quarantined`` files registered (and quarantined) on ``day``."""
    ids = [f"{day}-ok{i}" for i in range(ok)]
    for clip_id in ids:
        wh.add_clip(_clip(clip_id))
    for i in range(quarantined):
        ids.append(f"{day}-q{i}")
        wh.add_clip(_clip(ids[-1], status="quarantined", error=reason))
    with wh.engine.begin() as conn:  # registered that day, not today
        conn.execute(
            sa.text(
                "UPDATE media_files SET ingested_at = :t, updated_at = :t WHERE clip_id IN :ids"
            ).bindparams(sa.bindparam("ids", expanding=True)),
            {"t": _at(day), "ids": ids},
        )


def _calm_week(wh: Warehouse) -> None:
    """Seven days before TODAY at 1 quarantined file of 20."""
    for n in range(1, 8):
        _files(wh, TODAY - timedelta(days=n), ok=19, quarantined=1)


def _scored(wh: Warehouse, labels: list[str]) -> None:
    """v0001 trained 50/50 on a/b; TODAY's clips predicted ``labels``."""
    trained = {f"t{i}": "a" if i % 2 else "b" for i in range(4)}
    for clip_id in trained:
        wh.add_clip(_clip(clip_id))
    _register(wh, "v0001")
    wh.record_training_clips("v0001", [(c, "train", label) for c, label in trained.items()])
    scored = [f"s{i}" for i in range(len(labels))]
    for clip_id in scored:
        wh.add_clip(_clip(clip_id))
    wh.upsert_predictions(
        [
            _prediction(c, "v0001", label, 0.9, _at(TODAY, 2))
            for c, label in zip(scored, labels, strict=True)
        ]
    )


@pytest.fixture
def health_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


def _check(settings: Settings, senders: list[Any]) -> HealthReport:
    return run_health_check(
        settings, TODAY, senders=senders, dag_id="nightly_scoring", run_id="scheduled__x"
    )


def test_a_calm_day_sends_nothing(health_settings: Settings, sinks: Receivers) -> None:
    from pipeline.monitoring.notifiers import notifiers

    with Warehouse.connect(health_settings.warehouse) as wh:
        _calm_week(wh)
        _files(wh, TODAY, ok=19, quarantined=1)
        _scored(wh, ["a", "b", "a", "b"])  # the training distribution
    report = _check(health_settings, notifiers(AlertRoutes.from_env()))
    assert report.healthy, report.reasons
    assert report.quarantine.rate == pytest.approx(0.05)
    assert report.quarantine.baseline == pytest.approx(0.05)
    sinks.wait_for(emails=1, posts=1, timeout=0.5)
    assert sinks.mailbox.messages == [] and sinks.webhook.posts == []


def test_a_drifting_day_alerts_both_receivers(health_settings: Settings, sinks: Receivers) -> None:
    from pipeline.monitoring.notifiers import notifiers

    with Warehouse.connect(health_settings.warehouse) as wh:
        _calm_week(wh)
        _scored(wh, ["a"] * 6)  # every clip 'a' against a 50/50 training split
    report = _check(health_settings, notifiers(AlertRoutes.from_env()))
    assert [d.model_version for d in report.drifted] == ["v0001"]
    assert not report.quarantine.jumped

    [post] = sinks.webhook.posts
    assert post["kind"] == "health"
    assert post["summary"] == "health check for 2026-11-28: prediction drift"
    assert (post["dag_id"], post["run_id"], post["task_id"]) == (
        "nightly_scoring",
        "scheduled__x",
        "check_health",
    )
    [reason] = post["details"]
    assert reason.startswith("prediction drift on 2026-11-28 for model v0001: PSI ")
    assert "> 0.200 over 6 clips" in reason
    [message] = sinks.mailbox.messages
    assert message["Subject"] == "[stpipe] health check for 2026-11-28: prediction drift"
    assert "v0001" in Mailbox.body(message)


def test_a_quarantine_jump_alerts_with_its_reasons(
    health_settings: Settings, sinks: Receivers
) -> None:
    from pipeline.monitoring.notifiers import notifiers

    with Warehouse.connect(health_settings.warehouse) as wh:
        _calm_week(wh)
        _files(wh, TODAY, ok=12, quarantined=6, reason="<b>no audio stream</b>")
        _files(wh, TODAY - timedelta(days=30), ok=0, quarantined=9)  # outside the week: ignored
        wh.add_clip(_clip("late"))  # registered long ago, quarantined today (at scoring)
        wh.quarantine_clip("late", "decode failed")
        with wh.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE media_files SET ingested_at = :i, updated_at = :u WHERE clip_id = 'late'"
                ),
                {"i": _at(TODAY - timedelta(days=60)), "u": _at(TODAY, 3)},
            )
    report = _check(health_settings, notifiers(AlertRoutes.from_env()))
    q = report.quarantine
    assert (q.quarantined, q.ingested) == (7, 18)
    assert q.rate == pytest.approx(7 / 18) and q.baseline == pytest.approx(0.05)
    assert q.threshold == pytest.approx(0.1)  # 2 x 5 % is below the 10 % floor
    assert q.reasons == (("<b>no audio stream</b>", 6), ("decode failed", 1))

    [post] = sinks.webhook.posts
    assert post["summary"] == "health check for 2026-11-28: quarantine jump"
    [reason] = post["details"]
    assert "7 of 18 files (39%) against 5% over the 7 days before (alerts above 10%)" in reason
    assert "<b>no audio stream</b> (6), decode failed (1)" in reason
    body = Mailbox.body(sinks.mailbox.messages[0])
    assert "&lt;b&gt;no audio stream&lt;/b&gt;" in body and "<b>no audio" not in body


@pytest.mark.parametrize(
    ("week", "today", "jumped"),
    [
        ((0, 20), (1, 20), False),  # a calm week: one file of 20 (5 %) stays under the floor
        ((0, 20), (3, 20), True),  # 15 % > the 10 % floor
        ((4, 20), (7, 20), False),  # 35 % < 2 x the 20 % of the week before
        ((4, 20), (9, 20), True),  # 45 % > 40 %
        ((0, 0), (0, 0), False),  # nothing at all
    ],
)
def test_the_quarantine_jump_is_twice_the_week_and_above_the_floor(
    week: tuple[int, int], today: tuple[int, int], jumped: bool
) -> None:
    rows = [
        QuarantineDay(TODAY - timedelta(days=n), "r", week[0], week[1])
        for n in range(1, 8)
        if week[0]
    ]
    if today[0]:
        rows.append(QuarantineDay(TODAY, "r", today[0], today[1]))
    check = quarantine_check(rows, TODAY, HealthThresholds())
    assert check.jumped is jumped, check


def test_with_no_receiver_a_flagged_day_is_logged_and_the_task_succeeds(
    health_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with Warehouse.connect(health_settings.warehouse) as wh:
        _files(wh, TODAY, ok=1, quarantined=9)
    report = _check(health_settings, [])
    assert not report.healthy
    assert "nothing sent" in caplog.text and "quarantine rate jumped" in caplog.text


def test_a_flagged_day_no_receiver_accepts_fails_the_check(
    health_settings: Settings, sinks: Receivers
) -> None:
    from pipeline.monitoring.notifiers import WebhookNotifier

    sinks.webhook.status = 503
    with Warehouse.connect(health_settings.warehouse) as wh:
        _files(wh, TODAY, ok=1, quarantined=9)
    with pytest.raises(InfrastructureError, match="HTTP 503"):
        _check(health_settings, [WebhookNotifier(url=sinks.webhook_url)])
