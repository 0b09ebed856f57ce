"""A summary of what the pipeline holds, for ``stpipe status`` and the end of the demo."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pipeline.config import Settings
from pipeline.features.store import FeatureStore
from pipeline.text import terminal_safe
from pipeline.warehouse.connection import redact_url
from pipeline.warehouse.database import Warehouse
from pipeline.warehouse.reports import LabelTally


def pipeline_report(settings: Settings) -> dict[str, Any]:
    """Counts, the production model, held-out accuracy and predictions per label, as a dict."""
    with Warehouse.connect(settings.warehouse) as warehouse:
        clips = warehouse.clip_tallies()
        quarantined = sorted(warehouse.clips(status="quarantined"), key=lambda c: c.uri)
        production = warehouse.production_model()
        per_label: list[LabelTally] = []
        held_out: dict[str, Any] = {}
        if production is not None:
            per_label = warehouse.label_tallies(production.model_version)
            score = warehouse.held_out_score(production.model_version)
            accuracy = score.accuracy
            held_out = {
                "clips": score.clips,
                "accuracy": None if accuracy is None else round(accuracy, 4),
            }
        unlabelled_scored = warehouse.unlabelled_clips_scored()
    store = FeatureStore.from_settings(settings)
    return {
        "clips": [asdict(c) for c in clips],
        "quarantined": [{"uri": c.uri, "error": c.error} for c in quarantined],
        "production_model": None
        if production is None
        else {
            "version": production.model_version,
            "classes": production.class_names,
            "test_accuracy": production.metrics.get("accuracy"),
            "test_macro_f1": production.metrics.get("macro_f1"),
            "settings_hash": production.settings_hash,
        },
        "held_out": held_out,
        "predictions_per_label": [asdict(t) for t in per_label],
        "unlabelled_clips_scored": unlabelled_scored,
        "features": store.stats(),
        "locations": {
            "data dir": settings.data_dir,
            "warehouse": redact_url(settings.warehouse),
            "features": store.folder,
            "models": settings.models_root,
            "quarantine": settings.quarantine_root,
        },
    }


def render_report(report: dict[str, Any], console: Console) -> None:
    clips = Table(title="clips in media_files", title_justify="left")
    for column in ("status", "modality", "clips", "labelled"):
        clips.add_column(column)
    for row in report["clips"]:
        modality = row["modality"] or "-"  # a clip that never probed has none
        clips.add_row(row["status"], modality, str(row["clips"]), str(row["labelled"]))
    console.print(clips)

    if report["quarantined"]:
        bad = Table(title="quarantined files", title_justify="left")
        bad.add_column("file")
        bad.add_column("reason")
        for row in report["quarantined"][:20]:  # names may look like markup or hold escapes
            name = row["uri"].rsplit("/", 1)[-1]
            reason = (row["error"] or "").replace(row["uri"], name)
            bad.add_row(Text(terminal_safe(row["uri"])), Text(terminal_safe(reason)))
        console.print(bad)

    model = report["production_model"]
    if model is None:
        console.print("[yellow]no production model yet[/]: run `stpipe train`")
    else:
        held = report["held_out"]
        summary = Table(title="production model", show_header=False, title_justify="left")
        summary.add_column(style="bold")
        summary.add_column()
        summary.add_row("version", model["version"])
        summary.add_row("classes", ", ".join(model["classes"]))
        summary.add_row("test accuracy (training)", _fmt(model["test_accuracy"]))
        summary.add_row("test macro-F1 (training)", _fmt(model["test_macro_f1"]))
        summary.add_row(
            "held-out accuracy (predictions table)",
            f"{_fmt(held.get('accuracy'))} on {held.get('clips', 0)} test-split clips",
        )
        summary.add_row("unlabelled clips scored", str(report["unlabelled_clips_scored"]))
        console.print(summary)

        labels = Table(title=f"predictions per label ({model['version']})", title_justify="left")
        labels.add_column("predicted label")
        labels.add_column("clips")
        labels.add_column("mean confidence")
        for row in report["predictions_per_label"]:
            labels.add_row(row["predicted_label"], str(row["clips"]), _fmt(row["mean_confidence"]))
        console.print(labels)

    where = Table(title="outputs", show_header=False, title_justify="left")
    where.add_column(style="bold")
    where.add_column()
    features = report["features"]
    for name, location in report["locations"].items():
        where.add_row(name, Text(terminal_safe(location)))
    where.add_row(
        "feature cache",
        f"{features['clips']} clips, {features['frames']} frames, "
        f"{features['bytes'] / 1e6:.1f} MB ({features['settings_hash']})",
    )
    console.print(where)


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"
