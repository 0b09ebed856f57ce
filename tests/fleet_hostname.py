"""``[core] hostname_callable`` for the fleet test: several Celery workers share one host there,
so each is told its own name (STPIPE_FLEET_HOSTNAME), as containers get one from Docker."""

from __future__ import annotations

import os


def hostname() -> str:
    return os.environ["STPIPE_FLEET_HOSTNAME"]
