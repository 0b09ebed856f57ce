"""Real alert receivers for tests: an SMTP server (aiosmtpd) that keeps every message, and an
HTTP server (``http.server`` in a thread) that keeps every JSON POST. Both listen on 127.0.0.1
on a free port; :func:`receivers` starts them and points the alert variables at them."""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Mailbox:
    """What the SMTP sink received: parsed messages, with their envelope recipients."""

    messages: list[EmailMessage] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(message)  # type: ignore[arg-type]
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"

    @staticmethod
    def body(message: EmailMessage) -> str:
        """The message's HTML (or text) body."""
        part = message.get_body(preferencelist=("html", "plain"))
        assert part is not None, message
        return str(part.get_content())  # type: ignore[attr-defined]


@dataclass
class Webhook:
    """What the HTTP server received: the JSON bodies of POSTs to any path, and their paths."""

    posts: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    status: int = 200


def _handler(hook: Webhook) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            assert self.headers.get("Content-Type") == "application/json"
            hook.posts.append(json.loads(self.rfile.read(length)))
            hook.paths.append(self.path)
            self.send_response(hook.status)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@dataclass
class Receivers:
    mailbox: Mailbox
    webhook: Webhook
    smtp_port: int
    http_port: int

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/hooks/stpipe"

    @property
    def smtp_connection(self) -> str:
        """``AIRFLOW_CONN_SMTP_DEFAULT`` for the sink: plain SMTP (no SSL, no STARTTLS)."""
        return json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": self.smtp_port,
                "extra": {"disable_ssl": True, "disable_tls": True, "retry_limit": 0},
            }
        )

    def env(self) -> dict[str, str]:
        """Alert variables that send to both receivers."""
        return {
            "PIPELINE_ALERT_EMAIL": "ops@example.com, ml@example.com",
            "PIPELINE_ALERT_EMAIL_FROM": "stpipe@example.com",
            "PIPELINE_ALERT_WEBHOOK_URL": self.webhook_url,
            "AIRFLOW_CONN_SMTP_DEFAULT": self.smtp_connection,
        }

    def wait_for(self, emails: int, posts: int, timeout: float = 10.0) -> None:
        """Wait until at least so many emails and posts arrived (delivery is asynchronous)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.mailbox.messages) >= emails and len(self.webhook.posts) >= posts:
                return
            time.sleep(0.05)


@contextlib.contextmanager
def receivers() -> Iterator[Receivers]:
    """An SMTP sink and a webhook server, both stopped on exit."""
    mailbox, hook = Mailbox(), Webhook()
    smtp_port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hook))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receivers(mailbox, hook, smtp_port, server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        controller.stop()


def only(items: list[Any], where: Callable[[Any], bool]) -> Any:
    """The one item matching ``where``."""
    [found] = [item for item in items if where(item)]
    return found
