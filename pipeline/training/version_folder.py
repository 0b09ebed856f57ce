"""A version folder, written whole: ``model.keras``, ``metadata.json``, the confusion-matrix and
training-curve plots and ``MODEL_CARD.md`` (read back by :mod:`pipeline.registry.artifacts`)."""

from __future__ import annotations

import json
from typing import Any

from pipeline import storage
from pipeline.training.evaluation import model_card, plot_confusion_matrix, plot_training_curves


def write_version_folder(model: Any, metadata: dict[str, Any], model_uri: str) -> None:
    """Write model.keras, plots, the model card and metadata.json; the folder appears at
    ``model_uri`` complete (see :func:`pipeline.storage.atomic_folder`)."""
    with storage.atomic_folder(model_uri) as local:
        model.save(local / "model.keras")
        metrics = metadata["metrics"]
        title = f"{metadata['model_version']} ({metrics.get('evaluated_on')} split)"
        if metrics.get("confusion_matrix"):
            plot_confusion_matrix(
                metrics["confusion_matrix"],
                metadata["class_names"],
                str(local / "confusion_matrix.png"),
                title,
            )
        plot_training_curves(
            metadata["history"], str(local / "training_curves.png"), metadata["model_version"]
        )
        (local / "MODEL_CARD.md").write_text(model_card(metadata))
        (local / "metadata.json").write_text(
            json.dumps(metadata, indent=2, sort_keys=True, default=str)
        )
