"""### model_training

Trains candidate models on the cached features of the labelled clips, keeps the best, and puts
it in production only if it passes the promotion gate. Triggered by hand (the parameters below
set the run), or with their defaults by `stpipe_feedback`, which `feedback_watch` emits once
`PIPELINE_RETRAIN_MIN_FEEDBACK` reviewer labels arrived (off by default).

1. `validate_training_data`: refuses data that cannot train a meaningful model (one class, too
   few clips of a class, overlapping splits, NaN features) and logs per-class counts.
2. `plan_candidates`: the `grid` parameter (e.g. `{"lstm_units": [128, 256], "dropout":
   [0.0, 0.3]}`) expands into one candidate per combination (one candidate when empty).
3. `train_candidate` (one mapped task per candidate): train, evaluate on val and test, register
   as a candidate version. A killed task resumes from its last epoch when retried.
4. `select_best`: the candidate with the highest validation macro-F1 (of tied ones, the first
   in grid order, so a fleet promotes what one process would).
5. `promotion_gate` (branch): `promote_model` when the best candidate's macro-F1 on the current
   test split is at least production's (+ `PIPELINE_PROMOTION_MARGIN`), else `keep_production`;
   `promote` = yes / no overrides the gate. A promotion emits `stpipe_models`, which triggers
   scoring.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from _shared import DEFAULT_ARGS, FEEDBACK, MODELS, ON_FAILURE_CALLBACK, START_DATE, task_settings
from airflow.sdk import Param, dag, task

from pipeline.training.params import param_schema

#: Hyper-parameters a run sets (defaults, bounds and help come from TrainParams).
TRAINING_PARAMS = ("epochs", "batch_size", "learning_rate", "patience", "streams", "end_to_end")


@dag(
    dag_id="model_training",
    schedule=[FEEDBACK],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "retries": 1},
    on_failure_callback=ON_FAILURE_CALLBACK,
    tags=["stpipe", "training"],
    doc_md=__doc__,
    params={
        **{name: Param(**param_schema(name)) for name in TRAINING_PARAMS},
        "grid": Param(
            {},
            type="object",
            description='Tuning grid, e.g. {"lstm_units": [128, 256], "learning_rate": '
            '[0.002, 0.001], "dropout": [0.0, 0.3]}. Empty: one run with the values above.',
        ),
        "promote": Param(
            "gate",
            enum=["gate", "yes", "no"],
            description="gate = promote only if the promotion gate passes; yes / no override it.",
        ),
    },
)
def model_training() -> None:
    @task(execution_timeout=timedelta(minutes=30))
    def validate_training_data(params: dict[str, Any] | None = None) -> dict[str, Any]:
        from pipeline.stages import run_validate
        from pipeline.training.params import TrainParams

        assert params is not None  # injected by Airflow
        settings = task_settings()
        chosen = TrainParams(
            streams=str(params["streams"]),
            end_to_end=bool(params["end_to_end"]),
            seed=settings.seed,
        )
        report = run_validate(settings, chosen)
        return {k: report[k] for k in ("classes", "segments", "streams", "class_names")}

    @task(execution_timeout=timedelta(minutes=5))
    def plan_candidates(
        report: dict[str, Any], params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        from pipeline.training.tuning import candidate_grid

        assert params is not None
        base = {
            "epochs": int(params["epochs"]),
            "batch_size": int(params["batch_size"]),
            "learning_rate": float(params["learning_rate"]),
            "patience": int(params["patience"]),
            "streams": str(params["streams"]),
            "end_to_end": bool(params["end_to_end"]),
            "seed": task_settings().seed,
        }
        return candidate_grid(base, dict(params["grid"] or {}))

    @task(execution_timeout=timedelta(hours=4), max_active_tis_per_dagrun=2)
    def train_candidate(candidate: dict[str, Any]) -> dict[str, Any]:
        from pipeline.stages import run_train
        from pipeline.training.params import TrainParams

        result = run_train(task_settings(), TrainParams(**candidate), promote=False)
        return {**result.as_dict(), "candidate": candidate}

    @task(execution_timeout=timedelta(minutes=5))
    def select_best(results: list[dict[str, Any]]) -> dict[str, Any]:
        from pipeline.training.tuning import best_candidate

        best = best_candidate(list(results))
        return {k: best[k] for k in ("model_version", "val_metrics", "metrics", "candidate")}

    @task.branch(execution_timeout=timedelta(minutes=30))
    def promotion_gate(best: dict[str, Any], params: dict[str, Any] | None = None) -> str:
        import logging

        from pipeline.stages import run_gate

        assert params is not None
        if params["promote"] != "gate":
            return "promote_model" if params["promote"] == "yes" else "keep_production"
        decision = run_gate(task_settings(), best["model_version"])
        logging.getLogger(__name__).info("promotion gate: %s", decision.reason)
        return "promote_model" if decision.promote else "keep_production"

    @task(outlets=[MODELS], execution_timeout=timedelta(minutes=5))
    def promote_model(best: dict[str, Any]) -> str:
        from pipeline.stages import run_promote

        run_promote(task_settings(), best["model_version"])
        return str(best["model_version"])

    @task(execution_timeout=timedelta(minutes=5))
    def keep_production(best: dict[str, Any]) -> str:
        return f"{best['model_version']} stays a candidate"

    report = validate_training_data()
    results = train_candidate.expand(candidate=plan_candidates(report))  # type: ignore[arg-type]
    best = select_best(results)  # type: ignore[arg-type]
    promotion_gate(best) >> [promote_model(best), keep_production(best)]  # type: ignore[arg-type]


model_training()
