"""### media_ingest

Registers new media files from the landing folder (`PIPELINE_LANDING_DIR`, default
`$PIPELINE_DATA_DIR/landing`) in the warehouse's `media_files` table: files under
`labelled/<label>/` get that label, all others are unlabelled. Bad files are quarantined with the
reason and the rest go on. Emits the `stpipe_media_files` asset, which schedules
`feature_extraction`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from _shared import DEFAULT_ARGS, MEDIA_FILES, ON_FAILURE_CALLBACK, START_DATE, task_settings
from airflow.sdk import dag, task


@dag(
    dag_id="media_ingest",
    schedule="0 1 * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    on_failure_callback=ON_FAILURE_CALLBACK,
    tags=["stpipe", "ingest"],
    doc_md=__doc__,
)
def media_ingest() -> None:
    @task(outlets=[MEDIA_FILES], execution_timeout=timedelta(hours=1))
    def ingest_media() -> dict[str, Any]:
        from pipeline.progress import LogProgress
        from pipeline.stages import run_ingest

        return run_ingest(task_settings(), progress=LogProgress()).as_dict()

    ingest_media()


media_ingest()
