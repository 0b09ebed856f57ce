"""### feedback_watch

Hourly: counts the reviewer labels (`stpipe label`, table `label_feedback`) recorded since the
newest model version was created, or since `stpipe_feedback` was last emitted if that is later.
When there are at least `PIPELINE_RETRAIN_MIN_FEEDBACK` of them (0, the default, turns this
off), `announce_feedback` emits the `stpipe_feedback` asset, which schedules `model_training`;
otherwise it is skipped and nothing is emitted. A new version or an announcement resets the
count, so the same labels call for retraining once (not every hour while a training runs, after
one failed, or when it reused the newest version).

1. `check_feedback` (short circuit): the count and the decision.
2. `announce_feedback`: emits `stpipe_feedback`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from _shared import DEFAULT_ARGS, FEEDBACK, ON_FAILURE_CALLBACK, START_DATE, task_settings
from airflow.sdk import dag, task


@dag(
    dag_id="feedback_watch",
    schedule="@hourly",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    on_failure_callback=ON_FAILURE_CALLBACK,
    tags=["stpipe", "feedback"],
    doc_md=__doc__,
)
def feedback_watch() -> None:
    # FEEDBACK is an inlet only to read when it was last emitted (not to be scheduled by it).
    @task.short_circuit(inlets=[FEEDBACK], execution_timeout=timedelta(minutes=5))
    def check_feedback(inlet_events: Any = None) -> bool:
        import logging

        from pipeline.stages import run_feedback_check

        latest = list(inlet_events[FEEDBACK].ascending(False).limit(1))
        announced_at = latest[0].timestamp if latest else None
        check = run_feedback_check(task_settings(), announced_at)
        logging.getLogger(__name__).info("feedback since the newest model or call: %s", check)
        return bool(check["retrain"])

    @task(outlets=[FEEDBACK], execution_timeout=timedelta(minutes=5))
    def announce_feedback() -> dict[str, Any]:
        return {"asset": FEEDBACK.name}

    check_feedback() >> announce_feedback()


feedback_watch()
