"""What the DAGs share: assets that chain them, default task arguments, start date.

Not a DAG file (listed in .airflowignore). Imports nothing heavy.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Asset

#: Emitted by media_ingest when it has run; schedules feature_extraction.
MEDIA_FILES = Asset(name="stpipe_media_files", uri="stpipe://warehouse/media_files", group="stpipe")
#: Emitted by feature_extraction; schedules nightly_scoring (besides its 02:00 cron).
FEATURES = Asset(name="stpipe_features", uri="stpipe://features", group="stpipe")
#: Emitted by model_training; a new production model also triggers scoring.
MODELS = Asset(name="stpipe_models", uri="stpipe://warehouse/model_versions", group="stpipe")
#: Emitted by nightly_scoring: the predictions table changed.
PREDICTIONS = Asset(name="stpipe_predictions", uri="stpipe://warehouse/predictions", group="stpipe")
#: Emitted by feedback_watch once PIPELINE_RETRAIN_MIN_FEEDBACK reviewer labels arrived since the
#: newest model version (off when 0); schedules model_training.
FEEDBACK = Asset(name="stpipe_feedback", uri="stpipe://warehouse/label_feedback", group="stpipe")

START_DATE = datetime(2026, 1, 1)
#: Airflow pool capping concurrent VGG-16 tasks per deployment (slots = CNN tasks at once).
CNN_POOL = "cnn"

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "stpipe",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=30),
    "execution_timeout": timedelta(hours=2),
}
