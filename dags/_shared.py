"""What the DAGs share: assets that chain them, default task arguments, start date, the
alert notifiers (task and DAG failure callbacks), configured by the ``PIPELINE_ALERT_*``
variables (see pipeline/monitoring/alerts.py) and attached only when one is set, and
:func:`task_settings`, the settings every task runs with.

Not a DAG file (listed in .airflowignore). Imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset
from airflow.sdk.configuration import conf
from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from pipeline.monitoring.alerts import AlertRoutes
from pipeline.monitoring.notifiers import deadline_missed, notifiers

if TYPE_CHECKING:
    from airflow.sdk import Context

    from pipeline.config import Settings

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

#: The first retry's delay when the deployment leaves Airflow's [core] default_task_retry_delay
#: at Airflow's own default (300 s).
FIRST_RETRY_DELAY = timedelta(minutes=2)


def first_retry_delay() -> timedelta:
    """``[core] default_task_retry_delay`` (``AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY``, seconds)
    when the deployment sets it, else :data:`FIRST_RETRY_DELAY`.

    Airflow's parser gives its default for an option nobody set, so "set" means "not Airflow's
    default": a deployment that wants exactly 300 s sets 301.
    """
    seconds = conf.getint("core", "default_task_retry_delay")
    if str(seconds) == str(conf.get_default_value("core", "default_task_retry_delay")):
        return FIRST_RETRY_DELAY
    return timedelta(seconds=seconds)


def task_settings() -> Settings:
    """The settings a task runs with: the environment's (``PIPELINE_*``), with the warehouse taken
    from the Airflow connection ``stpipe_warehouse`` when it exists (an ``AIRFLOW_CONN_*``
    variable, a secrets backend or the metadata DB), else from ``PIPELINE_WAREHOUSE_URL``, else
    from the connections file ``PIPELINE_WAREHOUSE_CONNECTIONS_FILE`` names.

    Call it inside a task: it looks the connection up through the Task SDK.
    """
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    from pipeline.config import load_settings
    from pipeline.warehouse.airflow_connection import (
        WAREHOUSE_CONN_ID,
        warehouse_url_from_connection,
        with_warehouse_from_connections_file,
    )

    try:
        connection = Connection.get(WAREHOUSE_CONN_ID)
    except AirflowNotFoundException:
        return with_warehouse_from_connections_file(load_settings())
    return load_settings(warehouse_url=warehouse_url_from_connection(connection))


DEFAULT_ARGS: dict[str, Any] = {
    "owner": "stpipe",
    "retries": 2,
    # Retry n waits between 1 and 2 x retry_delay x 2**(n-1), up to max_retry_delay. A
    # multiplier in Airflow 3: True would be 1, a constant delay.
    "retry_delay": first_retry_delay(),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=30),
    "execution_timeout": timedelta(hours=2),
}
if ON_FAILURE_CALLBACK:
    DEFAULT_ARGS["on_failure_callback"] = ON_FAILURE_CALLBACK
