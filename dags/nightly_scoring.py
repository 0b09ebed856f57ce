"""### nightly_scoring

Scores every `ok` clip that has no prediction from the production model and upserts the rows
into `predictions` (label, confidence, all class probabilities, model version, run id, logical
date). Runs at 02:00 UTC every night, and also whenever new features or a new model arrive
(the `stpipe_features` / `stpipe_models` assets). Skips when no model is in production yet.
Re-running adds nothing. Last, `write_daily_report` writes the run's day's HTML report to
`reports/YYYY-MM-DD.html` and `reports/latest.html` under the data root (also after a skip).
Beside it, `check_health` alerts the `PIPELINE_ALERT_*` receivers when `prediction_drift` flags
the run's day or its quarantine rate jumped (it only logs when no receiver is configured).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from _shared import (
    ALERT_ROUTES,
    DEFAULT_ARGS,
    FEATURES,
    MODELS,
    ON_FAILURE_CALLBACK,
    PREDICTIONS,
    SCORING_DEADLINE,
    START_DATE,
    task_settings,
)
from airflow.sdk import (
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    TriggerRule,
    dag,
    get_current_context,
    task,
)


@dag(
    dag_id="nightly_scoring",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 2 * * *", timezone="UTC"), assets=(FEATURES | MODELS)
    ),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    on_failure_callback=ON_FAILURE_CALLBACK,
    deadline=SCORING_DEADLINE,
    tags=["stpipe", "scoring"],
    doc_md=__doc__,
)
def nightly_scoring() -> None:
    @task(outlets=[PREDICTIONS], execution_timeout=timedelta(hours=2))
    def score_new_clips() -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from pipeline.errors import NoProductionModelError
        from pipeline.progress import LogProgress
        from pipeline.stages import run_score

        context = get_current_context()
        dag_run = context["dag_run"]
        # Asset-triggered runs have no logical date; record when the run was due instead.
        logical_date = context.get("logical_date") or dag_run.run_after
        try:
            summary = run_score(
                task_settings(),
                run_id=dag_run.run_id,
                logical_date=logical_date,
                progress=LogProgress(),
            )
        except NoProductionModelError as exc:
            raise AirflowSkipException(str(exc)) from exc
        return summary.as_dict()

    # Also after a skipped scoring (no model yet): the report still shows quarantine and runs.
    @task(trigger_rule=TriggerRule.NONE_FAILED, execution_timeout=timedelta(minutes=30))
    def write_daily_report() -> str:
        from pipeline.stages import run_report

        context = get_current_context()
        logical_date = context.get("logical_date") or context["dag_run"].run_after
        return run_report(task_settings(), date=logical_date.date())

    # After a skipped scoring too: quarantines are checked whether or not a model scored.
    @task(trigger_rule=TriggerRule.NONE_FAILED, execution_timeout=timedelta(minutes=10))
    def check_health() -> dict[str, Any]:
        from pipeline.monitoring.notifiers import notifiers
        from pipeline.stages import run_health_check

        context = get_current_context()
        dag_run = context["dag_run"]
        logical_date = context.get("logical_date") or dag_run.run_after
        report = run_health_check(
            task_settings(),
            logical_date.date(),
            senders=notifiers(ALERT_ROUTES),
            dag_id=dag_run.dag_id,
            run_id=dag_run.run_id,
        )
        return report.as_dict()

    score_new_clips() >> [write_daily_report(), check_health()]


nightly_scoring()
