"""### feature_extraction

Decodes every `ok` clip that has no cached features for the current settings, runs the frozen
VGG-16 over its frames (or spectrogram windows) and writes 512-d features per frame to the
feature store (Parquet + TFRecord). Clips already cached are skipped without loading
TensorFlow. Scheduled by the `stpipe_media_files` asset; emits `stpipe_features`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from _shared import DEFAULT_ARGS, FEATURES, MEDIA_FILES, START_DATE
from airflow.sdk import dag, task


@dag(
    dag_id="feature_extraction",
    schedule=[MEDIA_FILES],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["stpipe", "features"],
    doc_md=__doc__,
)
def feature_extraction() -> None:
    @task(outlets=[FEATURES], execution_timeout=timedelta(hours=6))
    def extract_features() -> dict[str, Any]:
        from pipeline.config import load_settings
        from pipeline.progress import LogProgress
        from pipeline.stages import run_extract

        return run_extract(load_settings(), progress=LogProgress()).as_dict()

    extract_features()


feature_extraction()
