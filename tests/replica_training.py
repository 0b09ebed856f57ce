"""A training run with a chosen number of devices, for :mod:`tests.unit.test_distributed`, run
as ``python -c`` in a fresh interpreter (it must configure devices before TensorFlow starts, and
must not import ``tests.conftest``, which clears the ``PIPELINE_*`` variables it reads)."""

from __future__ import annotations

import json
from pathlib import Path

PARAMS = {"epochs": 3, "batch_size": 4, "patience": 100, "end_to_end": True}


def train_with_devices(devices: int, out: str) -> None:
    """Run in a subprocess: split the CPU into 2 logical devices, train with ``devices`` of
    them (settings from PIPELINE_* variables), write what the test compares to ``out``."""
    import logging

    import tensorflow as tf

    logging.basicConfig(level=logging.INFO)  # the test reads the trainer's log
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import time

    from pipeline.config import load_settings
    from pipeline.features.store import FeatureStore
    from pipeline.media.sequences import SequenceSpec
    from pipeline.model.architecture import load_classifier
    from pipeline.model.inference import predict_clips
    from pipeline.training.job import TrainingJob
    from pipeline.training.params import TrainParams
    from pipeline.training.trainer import train_model
    from pipeline.warehouse.database import Warehouse

    settings = load_settings()
    spec = SequenceSpec.from_settings(settings)
    job = TrainingJob(
        models_root=settings.models_root,
        feature_settings=settings.feature_settings(),
        sequence_spec=spec,
        cnn_weights=settings.cnn_weights,
        cnn_precision=settings.resolved_precision(),
        params=TrainParams(seed=settings.seed, **PARAMS),  # type: ignore[arg-type]
        devices=devices,
    )
    store = FeatureStore.from_settings(settings)
    with Warehouse.connect(settings.warehouse) as warehouse:
        clips = warehouse.clips(status="ok", labelled=True)
        started = time.perf_counter()
        result = train_model(clips, store, warehouse, job)
        seconds = time.perf_counter() - started
    model = load_classifier(f"{result.model_uri}/model.keras")
    probabilities = predict_clips(model, "end_to_end", clips, result.streams, spec=spec)
    metadata = json.loads(Path(result.model_uri, "metadata.json").read_text())
    Path(out).write_text(
        json.dumps(
            {
                "model": f"{result.model_uri}/model.keras",
                "history": metadata["history"],
                "metrics": result.metrics,
                "probabilities": {k: v.tolist() for k, v in probabilities.items()},
                "seconds": seconds,
            }
        )
    )
