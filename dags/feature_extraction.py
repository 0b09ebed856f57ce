"""### feature_extraction

Decodes every `ok` clip that has no cached features for the current settings, runs the frozen
VGG-16 over its frames (and spectrogram windows) and writes 512-d features per frame to the
feature store (Parquet + TFRecord). The pending clips are split into shards
(`PIPELINE_EXTRACT_CLIPS_PER_SHARD`, at most `PIPELINE_EXTRACT_MAX_SHARDS`), one mapped task
each, writing its own parts; the `cnn` pool caps how many run the CNN at once (create it with
`airflow pools set cnn <slots> "VGG-16 extraction"`). Clips already cached are skipped without
loading TensorFlow. Last, `summarize_extraction` adds up the shards' counts and compacts the
store's part index (one file listing which clips each part holds). Scheduled by the
`stpipe_media_files` asset; emits `stpipe_features`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from _shared import (
    CNN_POOL,
    DEFAULT_ARGS,
    FEATURES,
    MEDIA_FILES,
    ON_FAILURE_CALLBACK,
    START_DATE,
    task_settings,
)
from airflow.sdk import dag, task


@dag(
    dag_id="feature_extraction",
    schedule=[MEDIA_FILES],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    on_failure_callback=ON_FAILURE_CALLBACK,
    tags=["stpipe", "features"],
    doc_md=__doc__,
)
def feature_extraction() -> None:
    @task(execution_timeout=timedelta(minutes=10))
    def plan_extraction() -> list[dict[str, int]]:
        from pipeline.stages import plan_extraction

        return plan_extraction(task_settings())

    @task(pool=CNN_POOL, execution_timeout=timedelta(hours=6))
    def extract_features(shard: dict[str, int]) -> dict[str, Any]:
        from pipeline.progress import LogProgress
        from pipeline.stages import run_extract

        summary = run_extract(
            task_settings(), shard=shard["shard"], shards=shard["shards"], progress=LogProgress()
        )
        result = summary.as_dict()
        result["parts"] = len(summary.parts)  # XCom: counts, not lists
        return result

    @task(outlets=[FEATURES], execution_timeout=timedelta(minutes=10))
    def summarize_extraction(summaries: list[dict[str, Any]]) -> dict[str, Any]:
        from pipeline.extract import combine_summaries
        from pipeline.features.store import FeatureStore

        summary = combine_summaries(list(summaries))
        # One index file for the parts the shards wrote: later readers open it, not each entry.
        compaction = FeatureStore.from_settings(task_settings()).compact_index()
        summary["index_parts"] = compaction.parts
        return summary

    shards = extract_features.expand(shard=plan_extraction())
    summarize_extraction(shards)  # type: ignore[arg-type]  # XComArg resolves at run time


feature_extraction()
