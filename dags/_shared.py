"""What the DAGs share: assets that chain them, default task arguments, start date, and
the alert notifiers (task and DAG failure callbacks), configured by the ``PIPELINE_ALERT_*``
variables (see pipeline/monitoring/alerts.py) and attached only when one is set.

Not a DAG file (listed in .airflowignore). Imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset
from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from pipeline.monitoring.alerts import AlertRoutes
from pipeline.monitoring.notifiers import deadline_missed, notifiers

if TYPE_CHECKING:
    from airflow.sdk import Context

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

#: Where alerts go, read from the environment when a DAG file is parsed (no connection looked up).
ALERT_ROUTES = AlertRoutes.from_env()
#: Notifiers for every DAG's and every task's on_failure_callback; None when none is configured,
#: so nothing is attached. A task's callback runs once its retries are spent.
ON_FAILURE_CALLBACK: list[Callable[[Context], None]] | None = list(notifiers(ALERT_ROUTES)) or None
#: nightly_scoring not finished PIPELINE_SCORING_DEADLINE_MINUTES (120) after its logical date
#: (02:00 UTC) alerts the same receivers, from the triggerer; None (no deadline) when alerts are
#: off or the minutes are 0. Asset-triggered runs have no logical date, so Airflow gives them no
#: deadline.
SCORING_DEADLINE = (
    DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=ALERT_ROUTES.scoring_deadline,
        callback=AsyncCallback(deadline_missed),
        name="scoring_finished",
    )
    if ALERT_ROUTES.enabled and ALERT_ROUTES.scoring_deadline
    else None
)

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "stpipe",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=30),
    "execution_timeout": timedelta(hours=2),
}
if ON_FAILURE_CALLBACK:
    DEFAULT_ARGS["on_failure_callback"] = ON_FAILURE_CALLBACK
