"""What an alert says, and where alerts go. Standard library only: the DAG files read
:class:`AlertRoutes` when they are parsed.

An alert names the DAG, the task and the run that went wrong, the logical date, the error
(made printable and cut to :data:`MAX_ERROR_CHARS`) and what to do next, in words: no links,
since the operator's Airflow address is not known here. :meth:`Alert.html` (email) escapes
everything that came from outside; :meth:`Alert.payload` (webhook) is plain JSON data.

Where alerts go is read from the environment of the process that sends them (the DAG
processor for DAG callbacks, the worker for task callbacks and the health check, the triggerer
for the scoring deadline), so set these variables on every Airflow component:

* ``PIPELINE_ALERT_EMAIL``: comma-separated recipients; email goes through the Airflow SMTP
  connection ``PIPELINE_ALERT_SMTP_CONN_ID`` (default ``smtp_default``, e.g. from
  ``AIRFLOW_CONN_SMTP_DEFAULT``), from ``PIPELINE_ALERT_EMAIL_FROM``, else the connection's
  ``from_email`` extra, else :data:`DEFAULT_FROM`.
* ``PIPELINE_ALERT_WEBHOOK_URL``: a JSON POST of :meth:`Alert.payload` to this URL; or
  ``PIPELINE_ALERT_WEBHOOK_CONN_ID``: an Airflow connection holding the URL (looked up when an
  alert is sent, so the URL, often a secret, stays out of the DAG).
* ``PIPELINE_SCORING_DEADLINE_MINUTES``: how long after its logical date (02:00 UTC) the nightly
  scoring run must be finished (default 120; 0: no deadline). The deadline needs a running
  triggerer. Airflow 3.3.2's ``dag.test()`` (``airflow dags test``) fails at the end of a
  *successful* run of a DAG with a deadline (it looks the deadline up by its definition instead
  of its id); set 0 there.

With none of the routes set, no alert callback and no deadline is attached (see
:meth:`AlertRoutes.enabled`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html import escape
from typing import Any, Literal, Protocol

from pipeline.errors import ConfigError
from pipeline.text import printable

log = logging.getLogger(__name__)

AlertKind = Literal["task_failed", "dag_failed", "deadline_missed", "health"]

#: Longest error text an alert carries; the task log has the rest.
MAX_ERROR_CHARS = 2000
#: Longest subject line (mail clients cut long ones anyway).
MAX_SUBJECT_CHARS = 200
DEFAULT_FROM = "stpipe-alerts@localhost"
DEFAULT_SMTP_CONN_ID = "smtp_default"
DEFAULT_SCORING_DEADLINE_MINUTES = 120

HINTS: dict[AlertKind, str] = {
    "task_failed": (
        "Open this task's log in the Airflow UI (the DAG, run and task above) and fix the cause; "
        "then clear the task to run it again. Re-running is safe: every stage skips the work "
        "already done."
    ),
    "dag_failed": (
        "A task failed after its retries (the task failure alert says why). Fix the cause, then "
        "clear the failed task in this run; the stages skip what is already done."
    ),
    "deadline_missed": (
        "Scoring has not finished in time. In the Airflow UI, check whether this run is still "
        "running (a slow or stuck task), queued behind another run, or waiting for a worker or "
        "a pool slot; `stpipe status` shows what is scored so far."
    ),
    "health": (
        "Look at the day in the daily report, or query the prediction_drift and "
        "quarantine_daily views: a drifting day may be new kinds of clips or a broken source; "
        "a quarantine jump names its reasons in media_files.error."
    ),
}


@dataclass(frozen=True)
class Alert:
    """One alert. ``summary`` is one line; ``details`` are extra lines (the health reasons)."""

    kind: AlertKind
    summary: str
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    logical_date: str | None = None
    error: str | None = None
    details: tuple[str, ...] = ()
    hint: str = ""

    def __post_init__(self) -> None:
        if not self.hint:
            object.__setattr__(self, "hint", HINTS[self.kind])
        if self.error is not None:
            object.__setattr__(self, "error", truncate(printable(self.error), MAX_ERROR_CHARS))

    @property
    def subject(self) -> str:
        """``[stpipe] <summary>``: one line (no header can be forged), at most
        :data:`MAX_SUBJECT_CHARS` characters."""
        line = " ".join(f"[stpipe] {self.summary}".split())
        return truncate(line, MAX_SUBJECT_CHARS)

    def facts(self) -> list[tuple[str, str]]:
        """The labelled lines of the alert, in order, those that are known."""
        items = [
            ("DAG", self.dag_id),
            ("task", self.task_id),
            ("run", self.run_id),
            ("logical date", self.logical_date),
        ]
        return [(name, value) for name, value in items if value]

    def text(self) -> str:
        """The alert as plain text."""
        lines = [self.summary, ""]
        lines += [f"{name}: {value}" for name, value in self.facts()]
        lines += [f"- {detail}" for detail in self.details]
        if self.error:
            lines += ["", "error:", self.error]
        lines += ["", f"what to do: {self.hint}"]
        return "\n".join(lines)

    def html(self) -> str:
        """The alert as an HTML email body; every value is escaped."""
        rows = "".join(
            f"<tr><th align='left'>{escape(name)}</th><td>{escape(value)}</td></tr>"
            for name, value in self.facts()
        )
        parts = [f"<p><b>{escape(self.summary)}</b></p>", f"<table>{rows}</table>"]
        if self.details:
            items = "".join(f"<li>{escape(detail)}</li>" for detail in self.details)
            parts.append(f"<ul>{items}</ul>")
        if self.error:
            parts.append(f"<p>error:</p><pre>{escape(self.error)}</pre>")
        parts.append(f"<p>What to do: {escape(self.hint)}</p>")
        return "\n".join(parts)

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON body: every field, plus ``text`` (chat tools show it as is)."""
        return {
            "source": "stpipe",
            "kind": self.kind,
            "summary": self.summary,
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "task_id": self.task_id,
            "logical_date": self.logical_date,
            "error": self.error,
            "details": list(self.details),
            "hint": self.hint,
            "text": self.text(),
        }


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    note = f" ... ({len(text) - limit} more characters)"
    return text[: max(limit - len(note), 0)] + note


def alert_from_context(context: Mapping[str, Any]) -> Alert:
    """The alert for an Airflow failure callback's ``context``: a DAG failure when the context
    carries a ``reason`` (Airflow sets it for DAG callbacks only), else a task failure."""
    if "reason" in context:
        return dag_failure_alert(context)
    return task_failure_alert(context)


def task_failure_alert(context: Mapping[str, Any]) -> Alert:
    """A task's ``on_failure_callback`` context as an alert."""
    dag_id, run_id, logical_date = _run_facts(context)
    ti = context.get("ti")
    task_id = _attr(ti, "task_id")
    map_index = _attr(ti, "map_index")
    if task_id and isinstance(map_index, int) and map_index >= 0:
        task_id = f"{task_id}[{map_index}]"
    try_number = _attr(ti, "try_number")
    tries = f" (try {try_number})" if try_number else ""
    exception = context.get("exception")
    return Alert(
        kind="task_failed",
        summary=f"task {dag_id}.{task_id} failed{tries}",
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        logical_date=logical_date,
        error=_describe_error(exception) if exception is not None else None,
    )


def dag_failure_alert(context: Mapping[str, Any]) -> Alert:
    """A DAG's ``on_failure_callback`` context as an alert (``ti`` is the last task that
    failed, when Airflow knows it)."""
    dag_id, run_id, logical_date = _run_facts(context)
    task_id = _attr(context.get("ti"), "task_id")
    failed = f" (last failed task: {task_id})" if task_id else ""
    return Alert(
        kind="dag_failed",
        summary=f"DAG run {dag_id} failed{failed}",
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        logical_date=logical_date,
        error=str(context.get("reason") or "") or None,
    )


def deadline_alert(context: Mapping[str, Any]) -> Alert:
    """The context Airflow's scheduler gives a missed ``DeadlineAlert``'s callback as an alert:
    ``{"dag_run": <the run as JSON>, "deadline": {"deadline_time": ...}}``."""
    dag_run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    dag_id = _attr(dag_run, "dag_id")
    due = _iso(_attr(deadline, "deadline_time"))
    state = _attr(dag_run, "state")
    return Alert(
        kind="deadline_missed",
        summary=f"DAG run {dag_id} missed its deadline ({due or 'time unknown'})",
        dag_id=dag_id,
        run_id=_attr(dag_run, "dag_run_id") or _attr(dag_run, "run_id"),
        logical_date=_iso(_attr(dag_run, "logical_date")),
        details=(f"deadline: {due}", f"run state at the deadline: {state}"),
    )


def _run_facts(context: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(DAG id, run id, logical date) of a callback context; the logical date of an
    asset-triggered run (which has none) is shown as when the run was due."""
    dag_run = context.get("dag_run")
    dag_id = _attr(context.get("dag"), "dag_id") or _attr(dag_run, "dag_id")
    run_id = context.get("run_id") or _attr(dag_run, "run_id")
    logical_date = _iso(context.get("logical_date") or _attr(dag_run, "logical_date"))
    if logical_date is None and (run_after := _iso(_attr(dag_run, "run_after"))):
        logical_date = f"none (triggered by an asset; run after {run_after})"
    return dag_id, run_id, logical_date


def _describe_error(exception: object) -> str:
    if isinstance(exception, BaseException):
        return f"{type(exception).__name__}: {exception}"
    return str(exception)


def _attr(obj: Any, name: str) -> Any:
    """``obj.name`` or ``obj[name]`` (contexts mix objects and JSON dicts); None if absent."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _iso(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


_EMAIL = re.compile(r"^[^@\s,]+@[^@\s,]+$")


@dataclass(frozen=True)
class AlertRoutes:
    """Where alerts go; empty (nothing attached, nothing sent) unless configured."""

    email_to: tuple[str, ...] = ()
    email_from: str | None = None
    smtp_conn_id: str = DEFAULT_SMTP_CONN_ID
    webhook_url: str | None = None
    webhook_conn_id: str | None = None
    scoring_deadline: timedelta | None = field(
        default=timedelta(minutes=DEFAULT_SCORING_DEADLINE_MINUTES)
    )

    @property
    def enabled(self) -> bool:
        """Whether any receiver is configured."""
        return bool(self.email_to or self.webhook_url or self.webhook_conn_id)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AlertRoutes:
        """The routes the ``PIPELINE_ALERT_*`` variables (module docstring) describe.
        Reads variables only: no connection or database is looked up here."""
        env = os.environ if environ is None else environ
        email_to = tuple(a.strip() for a in env.get("PIPELINE_ALERT_EMAIL", "").split(","))
        email_to = tuple(a for a in email_to if a)
        if bad := [a for a in email_to if not _EMAIL.match(a)]:
            raise ConfigError(
                f"PIPELINE_ALERT_EMAIL holds {bad!r}, which is not an email address; give "
                "comma-separated addresses such as 'ops@example.com,ml@example.com'"
            )
        webhook_url = env.get("PIPELINE_ALERT_WEBHOOK_URL", "").strip() or None
        if webhook_url and not webhook_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"PIPELINE_ALERT_WEBHOOK_URL={webhook_url!r} is not an http(s) URL; fix or unset it"
            )
        minutes = env.get("PIPELINE_SCORING_DEADLINE_MINUTES", "").strip()
        try:
            deadline = int(minutes) if minutes else DEFAULT_SCORING_DEADLINE_MINUTES
        except ValueError:
            deadline = -1
        if deadline < 0:
            raise ConfigError(
                f"PIPELINE_SCORING_DEADLINE_MINUTES={minutes!r} must be a whole number of minutes "
                f"(default {DEFAULT_SCORING_DEADLINE_MINUTES}; 0: no deadline)"
            )
        return cls(
            email_to=email_to,
            email_from=env.get("PIPELINE_ALERT_EMAIL_FROM", "").strip() or None,
            smtp_conn_id=env.get("PIPELINE_ALERT_SMTP_CONN_ID", "").strip() or DEFAULT_SMTP_CONN_ID,
            webhook_url=webhook_url,
            webhook_conn_id=env.get("PIPELINE_ALERT_WEBHOOK_CONN_ID", "").strip() or None,
            scoring_deadline=timedelta(minutes=deadline) if deadline else None,
        )


class AlertSender(Protocol):
    """Anything that delivers an alert (the notifiers of :mod:`pipeline.monitoring.notifiers`)."""

    def send(self, alert: Alert) -> None: ...


def send_alert(alert: Alert, senders: Iterable[AlertSender]) -> list[str]:
    """Send ``alert`` through every sender; one that fails does not stop the others. Returns
    why each failed sender failed (empty: all delivered, or no sender)."""
    failures = []
    for sender in senders:
        try:
            sender.send(alert)
        except Exception as exc:
            log.exception("could not send the alert through %s", type(sender).__name__)
            failures.append(f"{type(sender).__name__}: {type(exc).__name__}: {exc}")
    return failures
