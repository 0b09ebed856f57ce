"""Claims on work, so that runs at the same time never do the same work twice.

Two ``stpipe extract`` on one machine, an Airflow task retried on another worker while the first
attempt is still alive, a CLI run beside the nightly DAG: each claims a clip in the warehouse's
``work_claims`` table before extracting it and releases the claim once its features are
committed. A claim is taken over when its owner is gone: at once when the owner ran on this
machine and its process has exited (a SIGKILL included), else once its heartbeat is older than
the lease (``PIPELINE_CLAIM_LEASE_SECONDS``). Owners renew their claims from a background thread
every quarter lease.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Collection
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Protocol

from pipeline.warehouse.database import Warehouse, utc_now

log = logging.getLogger(__name__)


class Claims(Protocol):
    """What the extraction engine needs: claim keys, release them."""

    def claim(self, keys: Collection[str]) -> set[str]: ...

    def release(self, keys: Collection[str]) -> None: ...


class ClaimAll:
    """No coordination: every key is yours (a single run, or tests of the engine)."""

    def claim(self, keys: Collection[str]) -> set[str]:
        return set(keys)

    def release(self, keys: Collection[str]) -> None:
        pass


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return "noboot"


def _start_ticks(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), or None if there is none: with
    the pid it identifies a process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5), after the command name


def process_owner() -> str:
    """This process, as a claim owner: ``host:boot:pid:start``."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{_boot_id()}:{pid}:{_start_ticks(pid) or 0}"


def owner_is_dead(owner: str) -> bool:
    """True when ``owner`` ran on this machine (same host name and boot) and has exited.
    Owners elsewhere are not known to be dead: their lease decides."""
    host, boot, pid, start = [*owner.split(":"), "", "", "", ""][:4]
    if host != socket.gethostname() or boot != _boot_id() or not pid.isdigit():
        return False
    return _start_ticks(int(pid)) != start


class WarehouseClaims:
    """Claims held in the warehouse under ``namespace`` (e.g. ``features/<settings hash>``),
    renewed by a heartbeat thread while the context is open and released when it closes."""

    def __init__(self, warehouse: Warehouse, namespace: str, lease_seconds: float) -> None:
        self.warehouse = warehouse
        self.namespace = namespace.rstrip("/")
        self.lease = timedelta(seconds=lease_seconds)
        self.owner = process_owner()
        self._held: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> WarehouseClaims:
        self._thread = threading.Thread(
            target=self._heartbeat, name="claims-heartbeat", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.release(set(self._held))
        except Exception:  # the warehouse is gone: the claims lapse with the lease
            log.warning(
                "could not release %d claims; they lapse in %s", len(self._held), self.lease
            )

    def _resource(self, key: str) -> str:
        return f"{self.namespace}/{key}"

    def _stale(self, owner: str, heartbeat_at: datetime) -> bool:
        return owner_is_dead(owner) or utc_now() - heartbeat_at > self.lease

    def claim(self, keys: Collection[str]) -> set[str]:
        resources = {self._resource(k): k for k in keys}
        got = self.warehouse.claim_work(sorted(resources), self.owner, stale=self._stale)
        mine = {resources[r] for r in got}
        self._held |= mine
        return mine

    def release(self, keys: Collection[str]) -> None:
        if keys:
            self.warehouse.release_work([self._resource(k) for k in keys], self.owner)
            self._held -= set(keys)

    def _heartbeat(self) -> None:
        interval = self.lease.total_seconds() / 4
        while not self._stop.wait(interval):
            try:
                self.warehouse.renew_claims(self.owner)
            except Exception as exc:  # the main thread meets the same failure and reports it
                log.warning("could not renew work claims: %s", exc)
