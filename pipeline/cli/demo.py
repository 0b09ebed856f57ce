"""``stpipe demo``: a synthetic corpus through the whole pipeline, orchestrated by Airflow.

1. Writes the demo corpus (see :mod:`pipeline.media.synthetic`) into the landing folder: labelled
   videos and audio in ``labelled/<class>/``, a few unlabelled clips and one corrupt upload.
2. Runs the four DAGs in order with ``airflow dags test`` (a real Airflow 3 metadata database
   under ``DATA_DIR/airflow``), or calls the stage functions directly with ``--no-airflow``.
3. Prints the summary: clips, quarantined files, model version, held-out accuracy, predictions
   per label, and where the outputs are.

Before step 1 it writes its settings to ``DATA_DIR/stpipe.toml``, which every later ``stpipe``
command with the same data dir reads (see :mod:`pipeline.config`): ``stpipe status`` after the
demo describes the demo's feature cache, not an empty one of the default settings.

Re-running is safe and changes nothing: the corpus is deterministic, ingest finds the clips
known, extraction finds the features cached, training finds the same fingerprint, scoring finds
every clip scored.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pipeline import storage
from pipeline.config import DATA_DIR_SETTINGS_FILE, Settings
from pipeline.errors import ConfigError, PipelineError

log = logging.getLogger(__name__)

#: Settings the demo uses unless the environment sets them: no download, small images.
DEMO_DEFAULTS: dict[str, Any] = {"cnn_weights": "none", "image_size": 64}
DAG_ORDER = ("media_ingest", "feature_extraction", "model_training", "nightly_scoring")


def run_demo(
    settings: Settings,
    *,
    use_airflow: bool = True,
    clips_per_class: int = 60,
    epochs: int = 40,
    console: Console | None = None,
) -> dict[str, Any]:
    """Generate the corpus, run every stage, print and return the report."""
    from pipeline.media.synthetic import generate_demo_corpus
    from pipeline.reporting.report import pipeline_report, render_report

    console = console or Console()
    if storage.is_remote(settings.data_dir):
        raise ConfigError("the demo writes its corpus locally; set PIPELINE_DATA_DIR to a folder")
    started = time.perf_counter()
    settings_file = write_settings_file(settings)
    console.print(f"    settings for later commands: {settings_file}")
    landing = Path(settings.landing_root)
    console.print(f"[bold]1/3[/] writing the demo corpus to {landing} ...")
    corpus = generate_demo_corpus(landing, clips_per_class=clips_per_class)
    console.print(
        f"    {corpus.labelled} labelled clips in 4 classes (video: colours_forward / "
        f"colours_reverse, audio: tones_rising / tones_falling), {corpus.unlabelled} unlabelled, "
        f"{corpus.corrupt} corrupt upload"
    )
    timings: dict[str, float] = {}
    if use_airflow:
        console.print("[bold]2/3[/] running the DAGs with `airflow dags test` ...")
        timings = run_dags_with_airflow(settings, epochs=epochs, console=console)
    else:
        console.print("[bold]2/3[/] running the stages in this process ...")
        timings = _run_stages(settings, epochs)
    console.print("[bold]3/3[/] summary")
    report = pipeline_report(settings)
    render_report(report, console)
    total = time.perf_counter() - started
    steps = Table(title="run time", show_header=False, title_justify="left")
    steps.add_column(style="bold")
    steps.add_column(justify="right")
    for step, seconds in timings.items():
        steps.add_row(step, f"{seconds:.1f} s")
    steps.add_row("demo in all", f"{total:.1f} s")
    console.print(steps)
    report["seconds"] = round(total, 1)
    report["timings"] = timings
    return report


def _run_stages(settings: Settings, epochs: int) -> dict[str, float]:
    from pipeline.stages import run_extract, run_ingest, run_score, run_train
    from pipeline.training.params import TrainParams

    timings = {}
    started = time.perf_counter()
    run_ingest(settings)
    timings["ingest"] = time.perf_counter() - started
    started = time.perf_counter()
    run_extract(settings)
    timings["extract"] = time.perf_counter() - started
    started = time.perf_counter()
    run_train(settings, TrainParams(epochs=epochs, seed=settings.seed))
    timings["train"] = time.perf_counter() - started
    started = time.perf_counter()
    now = datetime.now(UTC)
    run_score(settings, run_id=f"demo-{now:%Y%m%dT%H%M%SZ}", logical_date=now)
    timings["score"] = time.perf_counter() - started
    return timings


def write_settings_file(settings: Settings) -> Path:
    """Write ``DATA_DIR/stpipe.toml``: every setting that differs from its default, except
    ``data_dir`` (the file is found through it), so that later commands run with these settings.

    Replaces the file atomically; returns its path.
    """
    path = Path(settings.data_dir, DATA_DIR_SETTINGS_FILE)
    lines = [
        "# Written by `stpipe demo`: the settings every stpipe command with this data dir uses",
        "# unless the environment or PIPELINE_SETTINGS_FILE sets them (see pipeline/config.py).",
    ]
    for name, info in type(settings).model_fields.items():
        value = getattr(settings, name)
        if name != "data_dir" and value is not None and value != info.default:
            lines.append(f"{name} = {_toml_value(value)}")
    with storage.atomic_write(str(path)) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    return path


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    # A JSON string is a TOML basic string (same quotes and escapes).
    return json.dumps(str(value))


def settings_env(settings: Settings) -> dict[str, str]:
    """``PIPELINE_*`` variables reproducing ``settings`` in another process."""
    return {
        f"PIPELINE_{name.upper()}": str(value)
        for name, value in settings.model_dump().items()
        if value is not None
    }


def dags_folder() -> Path:
    folder = Path(__file__).resolve().parents[2] / "dags"
    if not folder.is_dir():
        raise ConfigError(
            f"no dags/ folder beside the package ({folder}); run the demo from a checkout of the "
            "repository, or use `stpipe demo --no-airflow`"
        )
    return folder


def airflow_env(settings: Settings) -> dict[str, str]:
    """Environment for the demo's Airflow: its own home and SQLite metadata DB in the data dir."""
    home = Path(settings.data_dir) / "airflow"
    return {
        **os.environ,
        **settings_env(settings),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONUNBUFFERED": "1",
    }


def run_dags_with_airflow(settings: Settings, *, epochs: int, console: Console) -> dict[str, float]:
    """Migrate the demo's Airflow DB, then `airflow dags test` each DAG; return seconds per DAG."""
    env = airflow_env(settings)
    logs = Path(env["AIRFLOW_HOME"]) / "demo-logs"
    logs.mkdir(parents=True, exist_ok=True)
    airflow = str(Path(sys.executable).with_name("airflow"))
    timings: dict[str, float] = {}
    _run_logged([airflow, "db", "migrate"], env, logs / "db-migrate.log", "airflow db migrate")
    _run_logged(
        [airflow, "pools", "set", "cnn", "1", "concurrent VGG-16 extraction tasks"],
        env,
        logs / "pools.log",
        "airflow pools set cnn",
    )
    for dag_id in DAG_ORDER:
        command = [airflow, "dags", "test", dag_id]
        if dag_id == "model_training":
            command += ["--conf", json.dumps({"epochs": epochs})]
        started = time.perf_counter()
        output = _run_logged(command, env, logs / f"{dag_id}.log", dag_id)
        if "state=success" not in output:
            raise PipelineError(
                f"DAG {dag_id} did not succeed; its log is {logs / f'{dag_id}.log'}\n"
                + _tail(output)
            )
        timings[dag_id] = time.perf_counter() - started
        console.print(
            f"    {dag_id}: success in {timings[dag_id]:.1f} s (log: {logs / f'{dag_id}.log'})"
        )
    return timings


def _run_logged(command: list[str], env: dict[str, str], log_file: Path, what: str) -> str:
    result = subprocess.run(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )
    log_file.write_text(result.stdout)
    if result.returncode != 0:
        raise PipelineError(
            f"{what} failed (exit {result.returncode}); log: {log_file}\n{_tail(result.stdout)}"
        )
    return result.stdout


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.splitlines()[-lines:])
