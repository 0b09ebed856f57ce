"""### model_training

Trains the LSTM(256) -> Dense(1024, relu) -> softmax head on cached features of the labelled
clips (train split; early stopping on val; metrics on test), saves the model under
`$PIPELINE_DATA_DIR/models/<version>/` and registers it in `model_versions`. The first version
becomes production. Triggered by hand; the parameters below set the run. Re-running with the same
data and parameters reuses the existing version. Emits `stpipe_models`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from _shared import DEFAULT_ARGS, MODELS, START_DATE
from airflow.sdk import Param, dag, task


@dag(
    dag_id="model_training",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "retries": 1},
    tags=["stpipe", "training"],
    doc_md=__doc__,
    params={
        "epochs": Param(40, type="integer", minimum=1, maximum=1000, description="Most epochs."),
        "batch_size": Param(
            32, type="integer", minimum=1, maximum=4096, description="Clips per batch."
        ),
        "learning_rate": Param(
            0.002, type="number", exclusiveMinimum=0, maximum=1, description="Nadam learning rate."
        ),
        "patience": Param(8, type="integer", minimum=0, description="Early-stopping patience."),
        "streams": Param(
            "auto",
            enum=["auto", "video", "audio", "both"],
            description="Feature streams the head reads: auto = whatever the data has.",
        ),
        "promote": Param(
            "auto",
            enum=["auto", "yes", "no"],
            description="Make the new version production: auto = only if there is none yet.",
        ),
    },
)
def model_training() -> None:
    @task(outlets=[MODELS], execution_timeout=timedelta(hours=4))
    def train_model(params: dict[str, Any] | None = None) -> dict[str, Any]:
        from pipeline.config import load_settings
        from pipeline.stages import run_train
        from pipeline.train import TrainParams

        assert params is not None  # injected by Airflow from the DAG's Params
        settings = load_settings()
        train_params = TrainParams(
            epochs=int(params["epochs"]),
            batch_size=int(params["batch_size"]),
            learning_rate=float(params["learning_rate"]),
            patience=int(params["patience"]),
            seed=settings.seed,
            streams=str(params["streams"]),
        )
        promote = {"auto": None, "yes": True, "no": False}[params["promote"]]
        return run_train(settings, train_params, promote=promote).as_dict()

    train_model()


model_training()
