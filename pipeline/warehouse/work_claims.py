"""``work_claims``: the rows behind :mod:`pipeline.warehouse.claims` (who is doing which work
right now)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from pipeline.warehouse.connection import WarehouseConnection, utc_now

log = logging.getLogger(__name__)


class WorkClaimsSql(WarehouseConnection):
    """Claiming, renewing and releasing ``work_claims`` rows."""

    def claim_work(
        self,
        resources: Sequence[str],
        owner: str,
        *,
        stale: Callable[[str, datetime], bool],
    ) -> set[str]:
        """Claim ``resources`` for ``owner``; return those it now holds (including ones it held
        already). A claim of another owner is taken over when ``stale(owner, heartbeat_at)``."""
        mine: set[str] = set()
        now = utc_now()
        for chunk in _chunks(resources, 500):
            with self.engine.begin() as conn:
                held = conn.execute(
                    sa.text(
                        "SELECT resource, owner, heartbeat_at FROM work_claims WHERE resource IN :r"
                    ).bindparams(sa.bindparam("r", expanding=True)),
                    {"r": list(chunk)},
                ).all()
                for row in held:
                    if row.owner != owner and stale(row.owner, as_datetime(row.heartbeat_at)):
                        log.info("taking over %s from %s (gone)", row.resource, row.owner)
                        conn.execute(
                            sa.text("DELETE FROM work_claims WHERE resource = :r AND owner = :o"),
                            {"r": row.resource, "o": row.owner},
                        )
                conn.execute(
                    sa.text(
                        "INSERT INTO work_claims (resource, owner, claimed_at, heartbeat_at)"
                        " VALUES (:r, :o, :t, :t) ON CONFLICT (resource) DO NOTHING"
                    ),
                    [{"r": r, "o": owner, "t": now} for r in chunk],
                )
                mine.update(
                    conn.execute(
                        sa.text(
                            "SELECT resource FROM work_claims WHERE owner = :o AND resource IN :r"
                        ).bindparams(sa.bindparam("r", expanding=True)),
                        {"o": owner, "r": list(chunk)},
                    ).scalars()
                )
        return mine

    def renew_claims(self, owner: str) -> None:
        """Heartbeat: every claim of ``owner`` stays valid for another lease."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE work_claims SET heartbeat_at = :t WHERE owner = :o"),
                {"o": owner, "t": utc_now()},
            )

    def release_work(self, resources: Iterable[str], owner: str) -> None:
        for chunk in _chunks(list(resources), 500):
            with self.engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "DELETE FROM work_claims WHERE owner = :o AND resource IN :r"
                    ).bindparams(sa.bindparam("r", expanding=True)),
                    {"o": owner, "r": list(chunk)},
                )


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def as_datetime(value: Any) -> datetime:
    """A timestamp column as an aware datetime (SQLite hands back text)."""
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when if when.tzinfo else when.replace(tzinfo=UTC)
