"""``[core] hostname_callable`` for the fleet test: several Celery workers share one host there,
so each is told its own name (STPIPE_FLEET_HOSTNAME), as containers get one from Docker. The
other components keep the host's name."""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("STPIPE_FLEET_HOSTNAME") or socket.getfqdn()
