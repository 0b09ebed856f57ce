"""``stpipe``: run each pipeline stage from the command line (the same functions Airflow runs).

Settings come from ``PIPELINE_*`` environment variables (see ``stpipe settings``).
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from pipeline.config import Settings, load_settings
from pipeline.errors import PipelineError, infrastructure_problem
from pipeline.features.store import FeatureStore, list_settings_folders
from pipeline.registry.artifacts import model_kind, read_metadata
from pipeline.registry.versions import rollback
from pipeline.reporting.report import pipeline_report, render_report
from pipeline.stages import (
    run_extract,
    run_ingest,
    run_label,
    run_label_csv,
    run_promote,
    run_report,
    run_score,
    run_train,
)
from pipeline.text import terminal_safe
from pipeline.training.params import DEFAULTS, TrainParams, param_help
from pipeline.warehouse.airflow_connection import with_warehouse_from_connections_file
from pipeline.warehouse.connection import redact_url
from pipeline.warehouse.database import ModelRecord, Warehouse

app = typer.Typer(
    help=(
        "Classify video and audio clips: ingest -> extract (VGG-16 features) -> train "
        "(LSTM head) -> score (predictions into SQL). Settings come from PIPELINE_* "
        "environment variables; `stpipe settings` shows them."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)  # an error stays one line in logs
out = Console()
log = logging.getLogger("pipeline.cli.app")


class RichProgress:
    """:class:`pipeline.progress.Progress` as a rich progress bar with rate and ETA."""

    def __init__(self) -> None:
        self._bar: Progress | None = None
        self._task: Any = None
        self._frames = 0
        self._started = 0.0

    def start(self, description: str, total: int, unit: str = "items") -> None:
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, rate="")
        self._frames = 0
        self._started = datetime.now().timestamp()

    def advance(self, items: int = 1, frames: int = 0) -> None:
        if self._bar is None:
            return
        self._frames += frames
        elapsed = max(datetime.now().timestamp() - self._started, 1e-6)
        rate = f"{self._frames / elapsed:.1f} frames/s" if self._frames else ""
        self._bar.update(self._task, advance=items, rate=rate)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class _TerminalSafe(logging.Filter):
    """Log lines quote file names: show their control characters escaped."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = terminal_safe(record.getMessage()), None
        return True


def _setup_logging(verbose: bool) -> None:
    handler = RichHandler(console=console, show_path=False, rich_tracebacks=True)
    handler.addFilter(_TerminalSafe())
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[handler],
        force=True,
    )
    for noisy in ("numba", "matplotlib", "absl", "h5py", "PIL", "airflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _settings() -> Settings:
    try:
        return with_warehouse_from_connections_file(load_settings())
    except PipelineError as exc:
        _fail(exc)


def _fail(exc: Exception) -> NoReturn:
    console.print(Text.assemble(("error: ", "bold red"), terminal_safe(str(exc))))
    raise typer.Exit(code=1)


def _show(title: str, summary: dict[str, Any]) -> None:
    """A stage's summary as a two-column table. Values are shown as plain text, control
    characters escaped: file names and error messages may contain anything, including what
    rich would read as markup or a terminal as a command."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in summary.items():
        if isinstance(value, list) and len(value) > 6:
            value = ", ".join(map(str, value[:6])) + f", ... ({len(value)} in all)"
        table.add_row(key, Text(terminal_safe(str(value))))
    out.print(table)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    _setup_logging(verbose)


@app.command()
def ingest(
    directory: Annotated[
        str | None,
        typer.Argument(
            help="Folder (or URI) to scan. Default: the landing folder, where files under "
            "labelled/<label>/ are labelled and all others unlabelled.",
            show_default=False,
        ),
    ] = None,
    labelled: Annotated[
        bool, typer.Option("--labelled", help="Files under DIR/<label>/... get label <label>.")
    ] = False,
    manifest: Annotated[
        str | None,
        typer.Option(
            help="CSV of files to ingest instead of a folder: columns path (relative to the CSV), "
            "label and split (train/val/test; overrides the split chosen from the clip id).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Register media files: hash, probe, copy to the media store, quarantine bad ones."""

    if labelled and directory is None:
        _fail(PipelineError("--labelled needs a DIR; the landing folder uses labelled/<label>/"))
    settings = _settings()
    try:
        summary = run_ingest(
            settings, directory, labelled=labelled, manifest=manifest, progress=RichProgress()
        )
    except PipelineError as exc:
        _fail(exc)
    _show("ingest", summary.as_dict())


@app.command()
def extract(
    shard: Annotated[
        str,
        typer.Option(
            help="Only shard K of N (e.g. 2/4): run one per machine to split the work; clips "
            "are assigned to shards by their id.",
        ),
    ] = "1/1",
) -> None:
    """Compute and cache VGG-16 features for every ok clip lacking them (Parquet + TFRecord)."""

    try:
        number, total = (int(x) for x in shard.split("/"))
    except ValueError:
        _fail(PipelineError(f"--shard takes K/N, e.g. 1/4; got {shard!r}"))
    settings = _settings()
    try:
        summary = run_extract(settings, shard=number - 1, shards=total, progress=RichProgress())
    except PipelineError as exc:
        _fail(exc)
    _show("extract", summary.as_dict())


features_app = typer.Typer(help="Inspect and check the feature cache.", no_args_is_help=True)
app.add_typer(features_app, name="features")


@features_app.command("list")
def features_list() -> None:
    """Every cached settings folder: what made it, how many clips and frames, its size."""

    settings = _settings()
    table = Table(title=f"feature cache ({settings.features_root})", title_justify="left")
    for column in (
        "settings hash",
        "image",
        "precision",
        "weights",
        "clips",
        "segments",
        "video frames",
        "audio frames",
        "MB",
    ):
        table.add_column(column)
    for settings_hash in list_settings_folders(settings.features_root):
        store = FeatureStore(settings.features_root, settings_hash)
        meta = store.read_settings().get("video", {})
        stats = store.stats()
        current = " (current)" if settings_hash == settings.settings_hash else ""
        table.add_row(
            settings_hash + current,
            str(meta.get("image_size", "?")),
            str(meta.get("precision", "?")),
            str(meta.get("cnn_weights", "?")),
            str(stats["clips"]),
            str(stats["segments"]),
            str(stats["video_frames"]),
            str(stats["audio_frames"]),
            f"{stats['bytes'] / 1e6:.1f}",
        )
    out.print(table)


@features_app.command("verify")
def features_verify(
    settings_hash: Annotated[
        str | None, typer.Option(help="Folder to check. Default: the current settings' one.")
    ] = None,
) -> None:
    """Prove that the Parquet and TFRecord copies hold the same numbers (exit 1 if not)."""

    settings = _settings()
    store = FeatureStore(settings.features_root, settings_hash or settings.settings_hash)
    report = store.verify()
    for problem in report["problems"][:50]:
        console.print(f"[red]mismatch:[/] {problem}")
    _show(f"verify {store.settings_hash}", {**report, "problems": len(report["problems"])})
    if report["problems"]:
        raise typer.Exit(code=1)


@features_app.command("compact")
def features_compact(
    settings_hash: Annotated[
        str | None, typer.Option(help="Folder to compact. Default: the current settings' one.")
    ] = None,
    rescan: Annotated[
        bool,
        typer.Option(help="Also index committed parts missing from the index (lists the parts)."),
    ] = False,
) -> None:
    """Merge the index entries of parts written since the last compaction into one file (safe
    while extraction runs; a second run changes nothing)."""

    settings = _settings()
    store = FeatureStore(settings.features_root, settings_hash or settings.settings_hash)
    result = store.compact_index(rescan=rescan)
    _show(
        f"compact {store.settings_hash}",
        {"generation": result.generation, "parts": result.parts, "merged": result.merged},
    )


@app.command()
def train(
    epochs: Annotated[int, typer.Option(help=param_help("epochs"))] = DEFAULTS.epochs,
    batch_size: Annotated[int, typer.Option(help=param_help("batch_size"))] = DEFAULTS.batch_size,
    learning_rate: Annotated[
        float, typer.Option(help=param_help("learning_rate"))
    ] = DEFAULTS.learning_rate,
    patience: Annotated[int, typer.Option(help=param_help("patience"))] = DEFAULTS.patience,
    streams: Annotated[str, typer.Option(help=param_help("streams"))] = DEFAULTS.streams,
    lstm_units: Annotated[int, typer.Option(help=param_help("lstm_units"))] = DEFAULTS.lstm_units,
    dropout: Annotated[float, typer.Option(help=param_help("dropout"))] = DEFAULTS.dropout,
    end_to_end: Annotated[
        bool, typer.Option("--end-to-end", help=param_help("end_to_end"))
    ] = DEFAULTS.end_to_end,
    cnn_trainable: Annotated[
        bool, typer.Option("--cnn-trainable", help=param_help("cnn_trainable"))
    ] = DEFAULTS.cnn_trainable,
    class_weights: Annotated[
        str, typer.Option(help=param_help("class_weights"))
    ] = DEFAULTS.class_weights,
    min_clips_per_class: Annotated[
        int, typer.Option(help=param_help("min_clips_per_class"))
    ] = DEFAULTS.min_clips_per_class,
    promote: Annotated[
        bool | None,
        typer.Option(
            "--promote/--no-promote",
            help="Force or forbid promotion to production. Default: the promotion gate decides "
            "(macro-F1 on the current test split at least production's + "
            "PIPELINE_PROMOTION_MARGIN).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Train a model, evaluate it on the test split, register it, and promote it if it passes.

    A run killed midway resumes from its last finished epoch when started again with the same
    data and options.
    """

    settings = _settings()
    try:
        params = TrainParams(
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            patience=patience,
            seed=settings.seed,
            streams=streams,
            lstm_units=lstm_units,
            dropout=dropout,
            end_to_end=end_to_end,
            cnn_trainable=cnn_trainable,
            class_weights=class_weights,
            min_clips_per_class=min_clips_per_class,
        )
    except ValueError as exc:
        _fail(exc)
    try:
        result = run_train(settings, params, promote=promote)
    except PipelineError as exc:
        _fail(exc)
    _show("train", result.as_dict())


models_app = typer.Typer(help="The model registry: list, promote, roll back.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list() -> None:
    """Every registered version with its kind, streams, metrics and stage."""

    settings = _settings()
    table = Table(title="model versions", title_justify="left")
    for column in (
        "version",
        "stage",
        "kind",
        "streams",
        "classes",
        "test acc",
        "test macro-F1",
        "val macro-F1",
        "created",
    ):
        table.add_column(column)
    with Warehouse.connect(settings.warehouse) as warehouse:
        for m in warehouse.models():
            style = "bold green" if m.stage == "production" else None
            table.add_row(
                m.model_version,
                m.stage,
                _model_kind(m),
                "+".join(m.streams),
                str(len(m.class_names)),
                _num(m.metrics.get("accuracy")),
                _num(m.metrics.get("macro_f1")),
                _num(m.metrics.get("val_macro_f1")),
                str(m.created_at)[:19],
                style=style,
            )
    out.print(table)


@models_app.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="Version to put in production, e.g. v0003.")],
    check: Annotated[
        bool,
        typer.Option("--check/--force", help="Run the promotion gate first (default) or not."),
    ] = True,
    score: Annotated[
        bool,
        typer.Option(
            "--score/--no-score",
            help="Then score every clip the new production model has no prediction for "
            "(default), so the analyst views answer with it at once.",
        ),
    ] = True,
) -> None:
    """Put a version in production (the current one is archived)."""

    settings = _settings()
    try:
        decision = run_promote(settings, version, "gate" if check else "force")
    except PipelineError as exc:
        _fail(exc)
    if check:
        _show("promotion gate", decision.as_dict())
    if not decision.promote:
        _fail(PipelineError(f"{version} did not pass the gate; use --force to promote anyway"))
    out.print(f"{version} is now in production")
    if score:
        _score_production(settings, "promote")


@models_app.command("rollback")
def models_rollback(
    score: Annotated[
        bool,
        typer.Option(
            "--score/--no-score",
            help="Then score every clip the restored model has no prediction for (default).",
        ),
    ] = True,
) -> None:
    """Put the previously promoted version back into production."""

    settings = _settings()
    with Warehouse.connect(settings.warehouse) as warehouse:
        try:
            target = rollback(warehouse)
        except PipelineError as exc:
            _fail(exc)
    out.print(f"{target.model_version} is back in production")
    if score:
        _score_production(settings, "rollback")


def _score_production(settings: Settings, why: str) -> None:
    """Fill in the production model's predictions after the production alias moved."""

    now = datetime.now(UTC)
    try:
        summary = run_score(
            settings,
            run_id=f"cli-{why}-{now:%Y%m%dT%H%M%SZ}",
            logical_date=now,
            progress=RichProgress(),
        )
    except PipelineError as exc:
        _fail(exc)
    _show("score", summary.as_dict())


def _model_kind(record: ModelRecord) -> str:
    """The kind recorded in the version's metadata ('?' when its folder cannot be read)."""

    try:
        return model_kind(read_metadata(record))
    except (OSError, ValueError):
        return "?"


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"


@app.command()
def score(
    run_id: Annotated[
        str | None, typer.Option(help="Recorded with each prediction. Default: cli-<UTC time>.")
    ] = None,
) -> None:
    """Predict every ok clip that has no prediction from the production model."""

    settings = _settings()
    now = datetime.now(UTC)
    try:
        summary = run_score(
            settings,
            run_id=run_id or f"cli-{now:%Y%m%dT%H%M%SZ}",
            logical_date=now,
            progress=RichProgress(),
        )
    except PipelineError as exc:
        _fail(exc)
    _show("score", summary.as_dict())


@app.command()
def status() -> None:
    """What the warehouse holds: clips, quarantined files, models, predictions per label."""

    settings = _settings()
    try:
        report = pipeline_report(settings)
    except PipelineError as exc:
        _fail(exc)
    render_report(report, out)


@app.command()
def report(
    date: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"],
            help="Last day the report covers (YYYY-MM-DD). Default: today (UTC).",
        ),
    ] = None,
    out_dir: Annotated[
        str | None,
        typer.Option("--out", help="Folder or URI to write into. Default: DATA_DIR/reports."),
    ] = None,
) -> None:
    """Write the daily HTML report (plots embedded, no network needed to view it)."""
    settings = _settings()
    try:
        path = run_report(settings, date=None if date is None else date.date(), out=out_dir)
    except PipelineError as exc:
        _fail(exc)
    out.print(Text(f"report written to {terminal_safe(path)}"))


@app.command()
def label(
    clip_id: Annotated[
        str | None,
        typer.Argument(help="Clip id (or a unique prefix of at least 8 characters)."),
    ] = None,
    new_label: Annotated[
        str | None, typer.Argument(metavar="LABEL", help="The clip's correct label.")
    ] = None,
    by: Annotated[
        str | None, typer.Option("--by", help="Reviewer's name. Default: $USER, else 'cli'.")
    ] = None,
    note: Annotated[str | None, typer.Option("--note", help="Why, for the record.")] = None,
    csv_file: Annotated[
        str | None,
        typer.Option(
            "--csv",
            help="CSV file with columns clip_id,label (optional reviewer, note): every row "
            "or none is recorded.",
        ),
    ] = None,
) -> None:
    """Record a reviewer's label for a clip: training, evaluation and the analyst views use it
    from now on (table label_feedback, append-only)."""
    reviewer = by or os.environ.get("USER") or "cli"
    one = clip_id is not None and new_label is not None
    if (csv_file is None and not one) or (csv_file is not None and clip_id is not None):
        _fail(PipelineError("give either CLIP_ID LABEL or --csv FILE"))
    settings = _settings()
    try:
        if clip_id is not None and new_label is not None:
            records = [run_label(settings, clip_id, new_label, reviewer=reviewer, note=note)]
        else:
            records = run_label_csv(settings, str(csv_file), reviewer=reviewer)
    except PipelineError as exc:
        _fail(exc)
    for record in records:
        was = record.previous_label or "no label"
        out.print(Text(terminal_safe(f"{record.clip_id}: {record.label} (was {was})")))
    out.print(f"{len(records)} label(s) recorded by {terminal_safe(reviewer)}")


@app.command("settings")
def show_settings() -> None:
    """Print the effective settings, the precision VGG-16 computes in (and who decided `auto`),
    this host's instruction set, and the feature settings hash."""
    from pipeline.hardware import cpu_features

    settings = _settings()
    table = Table(title="settings (PIPELINE_<NAME>)", title_justify="left")
    table.add_column("name", style="bold")
    table.add_column("value")
    for name, value in settings.model_dump().items():
        shown = redact_url(value) if name == "warehouse_url" and value else str(value)
        table.add_row(name, Text(shown))
    table.add_row("warehouse (resolved)", Text(redact_url(settings.warehouse)))
    precision = settings.resolved_precision()
    if settings.cnn_precision == "auto":
        table.add_row("cnn_precision (resolved)", Text(settings.precision_decision.describe()))
    else:
        table.add_row("cnn_precision (resolved)", Text(precision))
    host = cpu_features()
    table.add_row("this host", Text(host.describe()))
    if precision == "bfloat16" and not host.bf16_native:
        table.add_row("warning", Text("bfloat16 is emulated on this host: VGG-16 runs slowly"))
    table.add_row("settings_hash", settings.settings_hash)
    out.print(table)


@app.command()
def demo(
    airflow: Annotated[
        bool,
        typer.Option(
            "--airflow/--no-airflow",
            help="Run the four DAGs with `airflow dags test` (default), or call the stages "
            "directly.",
        ),
    ] = True,
    clips_per_class: Annotated[int, typer.Option(help="Labelled clips per demo class.")] = 60,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 40,
) -> None:
    """Generate a synthetic video + audio corpus, run the whole pipeline on it, summarise.

    Unless set in the environment, the demo uses PIPELINE_CNN_WEIGHTS=none and
    PIPELINE_IMAGE_SIZE=64 so it needs no download and runs in minutes on a laptop CPU.
    """
    from pipeline.cli.demo import DEMO_DEFAULTS, run_demo

    overrides = {
        k: v for k, v in DEMO_DEFAULTS.items() if f"PIPELINE_{k.upper()}" not in os.environ
    }
    try:
        settings = load_settings(**overrides)
        run_demo(
            settings,
            use_airflow=airflow,
            clips_per_class=clips_per_class,
            epochs=epochs,
            console=out,
        )
    except PipelineError as exc:
        _fail(exc)


warehouse_app = typer.Typer(help="Warehouse administration (PostgreSQL).", no_args_is_help=True)
app.add_typer(warehouse_app, name="warehouse")


@warehouse_app.command("roles")
def warehouse_roles(
    admin_url: Annotated[
        str | None,
        typer.Option(
            envvar="PIPELINE_WAREHOUSE_ADMIN_URL",
            help="Connect as this (a superuser, e.g. postgres) to create the roles. Default: "
            "PIPELINE_WAREHOUSE_URL.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create or update the PostgreSQL roles stpipe_writer (the pipeline) and stpipe_analyst
    (SELECT on every table and view, nothing else). Idempotent: run it again after upgrades.

    Passwords come from PIPELINE_WAREHOUSE_WRITER_PASSWORD and
    PIPELINE_WAREHOUSE_ANALYST_PASSWORD; then point PIPELINE_WAREHOUSE_URL at stpipe_writer.
    """

    settings = _settings()
    try:
        with Warehouse.connect(admin_url or settings.warehouse) as warehouse:
            statements = warehouse.ensure_roles(
                os.environ.get("PIPELINE_WAREHOUSE_WRITER_PASSWORD", ""),
                os.environ.get("PIPELINE_WAREHOUSE_ANALYST_PASSWORD", ""),
            )
    except PipelineError as exc:
        _fail(exc)
    for statement in statements:
        console.print(Text(statement, style="dim"))
    out.print("roles stpipe_writer and stpipe_analyst are set up")


def main() -> None:
    try:
        _run_app()
    except SystemExit as exc:
        if "pipeline.tfenv" in sys.modules:  # let the exit guard keep this status
            from pipeline.tfenv import record_exit_code  # already loaded: costs nothing

            record_exit_code(exc.code if isinstance(exc.code, int) else 1)
        raise


def _run_app() -> None:
    """The app, with infrastructure failures reported as one clear line (exit 1) wherever they
    surface, instead of a traceback."""

    try:
        app()
    except Exception as exc:
        problem = infrastructure_problem(exc)
        if problem is None:
            raise
        log.debug("infrastructure failure", exc_info=exc)
        console.print(Text.assemble(("error: ", "bold red"), problem))
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
