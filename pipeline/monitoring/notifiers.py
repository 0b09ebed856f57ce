"""Airflow notifiers that deliver an :class:`~pipeline.monitoring.alerts.Alert`, and the
callback of the scoring deadline.

* :class:`EmailNotifier`: the SMTP provider's notifier (its hook, its connection), with the
  message of :mod:`pipeline.monitoring.alerts` instead of the provider's template.
* :class:`WebhookNotifier`: a JSON POST with ``urllib`` (no extra dependency).

Both work as ``on_failure_callback`` of a task or a DAG (``notifier(context)``), and both have
:meth:`send`, for an alert that is not about a failure (the health check). :func:`notifiers`
builds them from :class:`~pipeline.monitoring.alerts.AlertRoutes`; :func:`deadline_missed` is
the coroutine a ``DeadlineAlert`` calls in the triggerer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from airflow.providers.smtp.hooks.smtp import SmtpHook
from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import BaseNotifier

from pipeline.monitoring.alerts import (
    DEFAULT_FROM,
    Alert,
    AlertRoutes,
    alert_from_context,
    deadline_alert,
    send_alert,
)

log = logging.getLogger(__name__)

#: Seconds a webhook may take to answer.
WEBHOOK_TIMEOUT_SECONDS = 10.0


class _Untemplated:
    """A notifier whose message is built from the context, never rendered as a template: an
    error text holding ``{{ }}`` must be shown as written. (Rendering would also fail in
    ``dag.test()``, whose DAG callbacks get a SerializedDAG without a template environment.)"""

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        return None


class EmailNotifier(_Untemplated, SmtpNotifier):
    """Email through the SMTP provider's hook and the Airflow connection ``smtp_conn_id``
    (host, port, login; ``disable_ssl`` / ``disable_tls`` extras for a plain server)."""

    # Nothing is templated (see _Untemplated), so nothing is merged into the callback context.
    template_fields = ()  # type: ignore[assignment]

    def __init__(
        self, to: Sequence[str], *, from_email: str | None = None, smtp_conn_id: str
    ) -> None:
        super().__init__(to=list(to), from_email=from_email, smtp_conn_id=smtp_conn_id)

    def notify(self, context: Any) -> None:
        self.send(alert_from_context(context))

    async def async_notify(self, context: Any) -> None:
        await asyncio.to_thread(self.send, alert_from_context(context))

    def send(self, alert: Alert) -> None:
        """Mail ``alert`` (HTML body, every value escaped) to the recipients."""
        # A hook per message: the SMTP session is opened and closed around it.
        with SmtpHook(smtp_conn_id=self.smtp_conn_id) as hook:
            hook.send_email_smtp(
                to=self.to,
                from_email=self.from_email or hook.from_email or DEFAULT_FROM,
                subject=alert.subject,
                html_content=alert.html(),
            )
        log.info("alert mailed to %s: %s", ", ".join(self.to), alert.subject)


class WebhookNotifier(_Untemplated, BaseNotifier):
    """POSTs :meth:`Alert.payload` as JSON to ``url``, or to the URL of the Airflow connection
    ``conn_id`` (its host when that is a whole URL, else built from type, host, port and
    schema), looked up when sending."""

    template_fields = ()

    def __init__(self, *, url: str | None = None, conn_id: str | None = None) -> None:
        super().__init__()
        if (url is None) == (conn_id is None):
            raise ValueError("give the webhook either a url or a conn_id")
        self.url = url
        self.conn_id = conn_id

    def notify(self, context: Any) -> None:
        self.send(alert_from_context(context))

    async def async_notify(self, context: Any) -> None:
        await asyncio.to_thread(self.send, alert_from_context(context))

    def send(self, alert: Alert) -> None:
        """POST ``alert``; an answer other than 2xx raises."""
        url = self.url or _connection_url(str(self.conn_id))
        body = json.dumps(alert.payload()).encode()
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "stpipe-alerts"},
        )
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"the alert webhook answered HTTP {exc.code} {exc.reason}") from exc
        log.info("alert posted to the webhook (HTTP %s): %s", status, alert.subject)


def _connection_url(conn_id: str) -> str:
    from airflow.sdk import Connection

    conn = Connection.get(conn_id)
    if conn.host and "://" in conn.host:
        return str(conn.host)
    scheme = conn.conn_type if conn.conn_type in ("http", "https") else "https"
    port = f":{conn.port}" if conn.port else ""
    path = f"/{conn.schema.lstrip('/')}" if conn.schema else ""
    return f"{scheme}://{conn.host}{port}{path}"


def notifiers(routes: AlertRoutes) -> list[EmailNotifier | WebhookNotifier]:
    """The notifiers ``routes`` configures (none when nothing is)."""
    found: list[EmailNotifier | WebhookNotifier] = []
    if routes.email_to:
        found.append(
            EmailNotifier(
                routes.email_to, from_email=routes.email_from, smtp_conn_id=routes.smtp_conn_id
            )
        )
    if routes.webhook_url or routes.webhook_conn_id:
        found.append(WebhookNotifier(url=routes.webhook_url, conn_id=routes.webhook_conn_id))
    return found


async def deadline_missed(context: dict[str, Any]) -> list[str]:
    """The ``DeadlineAlert`` callback (runs in the triggerer): sends the missed deadline
    through the notifiers the triggerer's environment configures. Returns the failures."""
    alert = deadline_alert(context)
    senders = notifiers(AlertRoutes.from_env())
    if not senders:
        log.warning("%s, but no alert receiver is configured in the triggerer", alert.summary)
    return await asyncio.to_thread(send_alert, alert, senders)
