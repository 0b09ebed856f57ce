"""### nightly_scoring

Scores every `ok` clip that has no prediction from the production model and upserts the rows
into `predictions` (label, confidence, all class probabilities, model version, run id, logical
date). Runs at 02:00 UTC every night, and also whenever new features or a new model arrive
(the `stpipe_features` / `stpipe_models` assets). Skips when no model is in production yet.
Re-running adds nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from _shared import DEFAULT_ARGS, FEATURES, MODELS, PREDICTIONS, START_DATE
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, get_current_context, task


@dag(
    dag_id="nightly_scoring",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 2 * * *", timezone="UTC"), assets=(FEATURES | MODELS)
    ),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["stpipe", "scoring"],
    doc_md=__doc__,
)
def nightly_scoring() -> None:
    @task(outlets=[PREDICTIONS], execution_timeout=timedelta(hours=2))
    def score_new_clips() -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from pipeline.config import load_settings
        from pipeline.errors import NoProductionModelError
        from pipeline.progress import LogProgress
        from pipeline.stages import run_score

        context = get_current_context()
        dag_run = context["dag_run"]
        # Asset-triggered runs have no logical date; record when the run was due instead.
        logical_date = context.get("logical_date") or dag_run.run_after
        try:
            summary = run_score(
                load_settings(),
                run_id=dag_run.run_id,
                logical_date=logical_date,
                progress=LogProgress(),
            )
        except NoProductionModelError as exc:
            raise AirflowSkipException(str(exc)) from exc
        return summary.as_dict()

    score_new_clips()


nightly_scoring()
