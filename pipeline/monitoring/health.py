"""The nightly health check: is there anything about one day an operator should hear of?

Two things are flagged for ``day`` (the logical date of the nightly run):

* **drift**: a model version whose predicted labels of that day ``prediction_drift`` flags
  (population stability index against its training labels above ``drift_psi_threshold``);
* **a quarantine jump**: the day's quarantine rate (files quarantined that day / files
  registered that day, at most 1) above ``max(quarantine_jump_factor x`` the mean rate of the
  :data:`BASELINE_DAYS` days before, ``quarantine_rate_floor)``. Days without quarantines count
  as rate 0 in the mean; the floor keeps a calm week from turning one bad file into an alert.

:func:`check_health` only reads the warehouse; ``pipeline.stages.run_health_check`` sends the
report's :meth:`HealthReport.alert` when something is flagged.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from pipeline.monitoring.alerts import Alert, truncate
from pipeline.text import printable
from pipeline.warehouse.analytics import DriftDay, QuarantineDay
from pipeline.warehouse.database import Warehouse

#: Days before the checked one whose mean quarantine rate is the baseline.
BASELINE_DAYS = 7


@dataclass(frozen=True)
class HealthThresholds:
    """When the quarantine rate has jumped (the settings of the same names)."""

    quarantine_jump_factor: float = 2.0
    quarantine_rate_floor: float = 0.1


@dataclass(frozen=True)
class QuarantineCheck:
    """The quarantine rate of one day against its baseline. Rates are 0-1."""

    day: date
    quarantined: int
    ingested: int
    rate: float
    baseline: float
    threshold: float
    reasons: tuple[tuple[str, int], ...]  # (reason, files) of the day, most files first

    @property
    def jumped(self) -> bool:
        return self.rate > self.threshold


@dataclass(frozen=True)
class HealthReport:
    """What :func:`check_health` found for ``day``."""

    day: date
    drifted: tuple[DriftDay, ...]
    quarantine: QuarantineCheck

    @property
    def reasons(self) -> tuple[str, ...]:
        """One line per flagged finding; empty on a calm day."""
        lines = [
            f"prediction drift on {d.day} for model {d.model_version}: PSI {d.psi:.3f} > "
            f"{d.psi_threshold:.3f} over {d.clips} clips"
            for d in self.drifted
        ]
        q = self.quarantine
        if q.jumped:
            top = ", ".join(
                f"{truncate(printable(reason), 200)} ({files})" for reason, files in q.reasons[:3]
            )
            lines.append(
                f"quarantine rate jumped on {q.day}: {q.quarantined} of {q.ingested} files "
                f"({q.rate:.0%}) against {q.baseline:.0%} over the {BASELINE_DAYS} days before "
                f"(alerts above {q.threshold:.0%}); reasons: {top}"
            )
        return tuple(lines)

    @property
    def healthy(self) -> bool:
        return not self.reasons

    def alert(self, *, dag_id: str | None = None, run_id: str | None = None) -> Alert:
        """The alert that reports the flagged findings."""
        what = [
            "prediction drift" if self.drifted else "",
            "quarantine jump" if self.quarantine.jumped else "",
        ]
        return Alert(
            kind="health",
            summary=f"health check for {self.day}: {' and '.join(w for w in what if w)}",
            dag_id=dag_id,
            run_id=run_id,
            task_id="check_health" if dag_id else None,
            logical_date=self.day.isoformat(),
            details=self.reasons,
        )

    def as_dict(self) -> dict[str, Any]:
        """A small summary for XCom and logs."""
        return {
            "day": self.day.isoformat(),
            "healthy": self.healthy,
            "drifted_models": [d.model_version for d in self.drifted],
            "quarantine_rate": round(self.quarantine.rate, 4),
            "quarantine_threshold": round(self.quarantine.threshold, 4),
            "reasons": list(self.reasons),
        }


def check_health(
    warehouse: Warehouse, day: date, thresholds: HealthThresholds | None = None
) -> HealthReport:
    """The drift and quarantine findings for ``day`` (module docstring)."""
    thresholds = thresholds or HealthThresholds()
    drifted = tuple(
        d for d in warehouse.prediction_drift(days=1, until=day) if d.day == day and d.drifted
    )
    quarantine = quarantine_check(
        warehouse.quarantine_daily(days=BASELINE_DAYS + 1, until=day), day, thresholds
    )
    return HealthReport(day=day, drifted=drifted, quarantine=quarantine)


def quarantine_check(
    rows: list[QuarantineDay], day: date, thresholds: HealthThresholds
) -> QuarantineCheck:
    """``day``'s quarantine rate against the :data:`BASELINE_DAYS` days before, from the
    ``quarantine_daily`` rows of those days (per day and reason)."""
    quarantined: dict[date, int] = defaultdict(int)
    ingested: dict[date, int] = {}
    for row in rows:
        quarantined[row.day] += row.files
        ingested[row.day] = row.ingested  # the same on every row of a day

    def rate(of: date) -> float:
        files = quarantined.get(of, 0)
        return files / max(ingested.get(of, 0), files) if files else 0.0

    before = [day - timedelta(days=n) for n in range(1, BASELINE_DAYS + 1)]
    baseline = sum(rate(d) for d in before) / BASELINE_DAYS
    threshold = max(thresholds.quarantine_jump_factor * baseline, thresholds.quarantine_rate_floor)
    reasons = sorted(
        ((r.reason, r.files) for r in rows if r.day == day), key=lambda item: (-item[1], item[0])
    )
    return QuarantineCheck(
        day=day,
        quarantined=quarantined.get(day, 0),
        ingested=ingested.get(day, 0),
        rate=rate(day),
        baseline=baseline,
        threshold=threshold,
        reasons=tuple(reasons),
    )
