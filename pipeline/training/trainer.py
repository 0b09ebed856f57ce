"""Stage 3, train: fit a model, evaluate it, register it as a new version, hand it to promotion.

Two models, one recipe (LSTM(256) -> Dense(1024, relu) -> softmax, Nadam(0.002), categorical
cross-entropy and accuracy):

* the **head** (default) reads cached VGG-16 features: a ``tf.data`` pipeline over the feature
  store's TFRecord parts, one example per clip segment;
* the **end-to-end** model (``end_to_end=True``) is the seed's
  ``TimeDistributed(VGG-16 + GAP)`` network, trained on images decoded from the media segment
  by segment while it trains (``cnn_trainable`` fine-tunes VGG-16). Frozen, it computes exactly
  what the head computes on cached features (see tests/unit/test_parity.py), which is why
  caching is allowed. It needs no feature cache: its clips' segments are planned from their
  probed durations (:func:`~pipeline.training.selection.planned_segment_frames`) and its
  standardisation statistics come from a bounded sample of training frames run through its own
  VGG-16 (:func:`~pipeline.training.statistics.sampled_frame_statistics`).

Labels and splits come from the warehouse by clip id; data is validated first
(:mod:`pipeline.training.validation`). Training checkpoints every epoch under
``DATA_DIR/models/_runs/<fingerprint>/`` (:mod:`pipeline.training.checkpoint`): a run killed at
any point and started again resumes from its last finished epoch. Seeds are fixed (TensorFlow op
determinism on) and examples are read in an order fixed by clip id and seed, so a model depends
on its data, settings and seed only. Class weights balance skewed labels; early stopping watches
the validation loss and keeps the best epoch; TensorBoard logs go beside the checkpoints.
Metrics are clip-level (:func:`pipeline.model.inference.predict_clips`) on the validation and
test splits. The same data, settings and parameters as an existing version reuse it.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipeline.config import join_uri
from pipeline.features.store import FeatureStore
from pipeline.model.inference import predict_clips
from pipeline.model.inputs import feature_dataset, media_dataset, without_clip_ids
from pipeline.model.metrics import classification_metrics
from pipeline.registry.artifacts import model_kind, read_metadata
from pipeline.registry.gate import GateDecision
from pipeline.registry.promotion import promote_version
from pipeline.registry.versions import get_model
from pipeline.training.checkpoint import (
    TENSORBOARD_DIR,
    Checkpointer,
    RunFolder,
    RunState,
    claim_run,
)
from pipeline.training.data import TrainingData, prepare_data
from pipeline.training.job import TrainingJob, TrainResult
from pipeline.training.params import TrainParams
from pipeline.training.replicas import build_for_replicas, replica_scope
from pipeline.training.selection import (
    TrainingSet,
    class_weights,
)
from pipeline.training.statistics import (
    STATISTICS_BATCH_SIZE,
    StreamStatistics,
    feature_statistics,
    sampled_frame_statistics,
)
from pipeline.training.version_folder import write_version_folder
from pipeline.warehouse.claims import WarehouseClaims
from pipeline.warehouse.database import ClipRecord, ModelRecord, Warehouse

log = logging.getLogger(__name__)


@dataclass
class FitOutcome:
    """A fitted and evaluated model, before it is registered."""

    model: Any  # keras.Model
    state: RunState
    metrics: dict[str, Any]
    val_metrics: dict[str, Any]
    resumed_from_epoch: int | None
    seconds: float


def train_model(
    labelled: Sequence[ClipRecord], store: FeatureStore, warehouse: Warehouse, job: TrainingJob
) -> TrainResult:
    """Train, evaluate, save and register a model (or reuse the version trained on exactly this
    data and these parameters); then promote it as ``job.promotion`` says.

    Args:
        labelled: labelled ``ok`` clips from the warehouse.
        store: feature store of the current settings (the head's input; the end-to-end model
            reads the media and never the store).
        warehouse: the registry.
        job: where to write, what to record, how to promote.
    """
    data = prepare_data(labelled, store, job)
    record = warehouse.model_with_fingerprint(data.fingerprint)
    fit = None
    if record is None:
        run_uri = join_uri(job.runs_root, data.fingerprint[:16])
        # The same training started twice (on this machine or another) shares its checkpoints:
        # the second waits for the first's claim, then reuses its version.
        with claim_run(warehouse, data.fingerprint, job.claim_lease_seconds) as claims:
            record = warehouse.model_with_fingerprint(data.fingerprint)
            if record is None:
                with RunFolder.opened(run_uri) as folder:
                    fit = fit_and_evaluate(data, store, folder, job, claims)
                    record = register_version(fit, data, store, warehouse, job)
                    folder.remove_checkpoints()  # the version folder has the model now
    if fit is None:
        log.info("train: %s was trained on exactly this data; reusing it", record.model_version)
    gate = promote_version(
        warehouse,
        record,
        mode=job.promotion,
        features_root=store.root,
        margin=job.promotion_margin,
    )
    result = _result(record, data, fit, gate, warehouse)
    _log_result(result)
    return result


def fit_and_evaluate(
    data: TrainingData,
    store: FeatureStore,
    folder: RunFolder,
    job: TrainingJob,
    claims: WarehouseClaims | None = None,
) -> FitOutcome:
    """Fit (resuming from the run's checkpoints in ``folder``), restore the best epoch,
    evaluate. ``claims`` holds the run's claim, confirmed before every checkpoint."""
    from pipeline.tfenv import keras, tf

    started = time.perf_counter()
    keras.utils.set_random_seed(job.params.seed)
    tf.config.experimental.enable_op_determinism()
    inputs = _Inputs(data.training_set, store, job)
    model, state = _resume_or_build(data, store, folder, job)
    resumed_from = state.next_epoch if state.epoch >= 0 else None
    if not state.finished(job.params.epochs):
        _fit(model, state, inputs, data, folder, job.params, claims)
    if state.best_weights:
        model.load_weights(folder.local(state.best_weights))
    metrics, val_metrics = _evaluate(model, data.training_set, store, job)
    return FitOutcome(
        model,
        state,
        metrics,
        val_metrics,
        resumed_from,
        round(time.perf_counter() - started, 2),
    )


class _Inputs:
    """The ``tf.data`` input of one split, for the model kind being trained."""

    def __init__(self, training_set: TrainingSet, store: FeatureStore, job: TrainingJob) -> None:
        self.training_set, self.store, self.job = training_set, store, job

    def __call__(self, split: str, batch_size: int, shuffle_seed: int | None = None) -> Any:
        ts = self.training_set
        n_classes = len(ts.class_names)
        if self.job.params.end_to_end:
            return media_dataset(
                ts.split(split),
                ts.streams,
                n_classes,
                batch_size,
                self.job.sequence_spec,
                shuffle_seed=shuffle_seed,
            )
        return feature_dataset(
            self.store.tfrecord_parts(),
            ts.split(split),
            ts.streams,
            n_classes,
            batch_size,
            shuffle_seed=shuffle_seed,
        )


def _resume_or_build(
    data: TrainingData, store: FeatureStore, folder: RunFolder, job: TrainingJob
) -> tuple[Any, RunState]:
    from pipeline.model.architecture import load_classifier

    state = RunState.load(folder, data.fingerprint)
    if state is not None and state.checkpoint is not None:
        log.info(
            "train: resuming %s run %s after epoch %d",
            job.kind,
            data.fingerprint[:16],
            state.next_epoch,
        )
        checkpoint = str(folder.local(state.checkpoint))
        with replica_scope(job.devices):
            return load_classifier(checkpoint, compile=True), state
    return _build(data.training_set, store, job), RunState(data.fingerprint)


def _build(training_set: TrainingSet, store: FeatureStore, job: TrainingJob) -> Any:
    from pipeline.model.architecture import build_end_to_end_model, build_sequence_head

    params = job.params
    if params.end_to_end:
        statistics = _sampled_statistics(training_set, job)
        with replica_scope(job.devices):  # a model fits on the devices it was created on
            return build_end_to_end_model(
                len(training_set.class_names),
                statistics,
                cnn_weights=job.cnn_weights,
                image_size=job.sequence_spec.image_size,
                seed=params.seed,
                cnn_trainable=params.cnn_trainable,
                precision=job.cnn_precision,
                learning_rate=params.learning_rate,
                lstm_units=params.lstm_units,
                dropout=params.dropout,
            )
    train_ids = [c.clip_id for c in training_set.clips["train"]]
    statistics = {s: feature_statistics(store, train_ids, s) for s in training_set.streams}
    with replica_scope(job.devices):
        return build_sequence_head(
            len(training_set.class_names),
            statistics,
            learning_rate=params.learning_rate,
            lstm_units=params.lstm_units,
            dropout=params.dropout,
        )


def _sampled_statistics(training_set: TrainingSet, job: TrainingJob) -> StreamStatistics:
    """The end-to-end model's standardisation statistics, from a sample of training frames run
    through a frozen copy of its VGG-16 (same weights, seed, image size and precision)."""
    from pipeline.features.cnn import build_embedder
    from pipeline.tfenv import keras

    spec, params = job.sequence_spec, job.params
    embedder = build_embedder(
        job.cnn_weights, spec.image_size, job.cnn_precision, STATISTICS_BATCH_SIZE, params.seed
    )
    sample = sampled_frame_statistics(
        training_set.clips["train"], training_set.streams, spec, embedder, seed=params.seed
    )
    # Building the sample's encoder drew from the global seed: the model's init starts from the
    # seed again, as it would without the sample.
    keras.utils.set_random_seed(params.seed)
    return sample.by_stream


def _fit(
    model: Any,
    state: RunState,
    inputs: _Inputs,
    data: TrainingData,
    folder: RunFolder,
    params: TrainParams,
    claims: WarehouseClaims | None,
) -> None:
    """Fit one epoch at a time from ``state.next_epoch``, each epoch's examples shuffled with
    ``seed + epoch``: the order of an epoch is the same whether the run was resumed or not, so a
    resumed run ends with the model an uninterrupted run ends with."""
    from pipeline.tfenv import keras

    has_val = bool(data.training_set.examples["val"])
    if not has_val:
        log.warning("no validation clips: early stopping watches the training loss instead")
    callbacks = [
        # TensorBoard first: the Checkpointer publishes its logs once it has closed them.
        keras.callbacks.TensorBoard(
            log_dir=str(folder.work / TENSORBOARD_DIR), write_graph=False, profile_batch=0
        ),
        Checkpointer(folder, state, "val_loss" if has_val else "loss", params.patience, claims),
    ]
    weights = class_weights(data.training_set, params.class_weights, data.segment_frames)
    with warnings.catch_warnings():
        # The media dataset's length is unknown until decoded, so Keras meets its end in every
        # epoch and warns that the input "ran out of data": that end is the epoch's end.
        warnings.filterwarnings("ignore", "Your input ran out of data", UserWarning)
        build_for_replicas(model, without_clip_ids(inputs("train", params.batch_size)))
        while not state.finished(params.epochs):
            epoch = state.next_epoch
            model.fit(
                without_clip_ids(inputs("train", params.batch_size, params.seed + epoch)),
                validation_data=(
                    without_clip_ids(inputs("val", params.batch_size)) if has_val else None
                ),
                epochs=epoch + 1,
                initial_epoch=epoch,
                class_weight=weights,
                callbacks=callbacks,
                shuffle=False,  # the datasets shuffle themselves, seeded
                verbose=0,
            )
            if state.epoch != epoch:  # Keras ended the epoch without the Checkpointer
                raise RuntimeError(f"epoch {epoch + 1} ended without a checkpoint")


def _evaluate(
    model: Any, training_set: TrainingSet, store: FeatureStore, job: TrainingJob
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Clip-level metrics on the test split (or the best split there is), and on validation."""
    examples = training_set.examples
    eval_split = "test" if examples["test"] else "val" if examples["val"] else "train"
    if eval_split != "test":
        log.warning("no test clips: metrics below are on the %s split", eval_split)
    metrics = _clip_metrics(model, training_set, eval_split, store, job)
    metrics["evaluated_on"] = eval_split
    val_metrics = _clip_metrics(model, training_set, "val", store, job) if examples["val"] else {}
    return metrics, val_metrics


def _clip_metrics(
    model: Any, training_set: TrainingSet, split: str, store: FeatureStore, job: TrainingJob
) -> dict[str, Any]:
    clips = training_set.clips[split]
    spec = job.sequence_spec
    probabilities = predict_clips(
        model, job.kind, clips, training_set.streams, store=store, spec=spec
    )
    if not probabilities:
        return {"accuracy": None, "macro_f1": None, "examples": 0}
    index = {label: i for i, label in enumerate(training_set.class_names)}
    scored = [c for c in clips if c.clip_id in probabilities]
    y_true = np.array([index[str(c.label)] for c in scored])
    y_pred = np.array([int(np.argmax(probabilities[c.clip_id])) for c in scored])
    return classification_metrics(y_true, y_pred, training_set.class_names)


def register_version(
    fit: FitOutcome,
    data: TrainingData,
    store: FeatureStore,
    warehouse: Warehouse,
    job: TrainingJob,
) -> ModelRecord:
    """Reserve a version name, write its folder (whole or not at all), record the clips it
    learnt from (before registering, so no registered version lacks them), register it.
    Trainings running at once never collide: the name is reserved in the warehouse first."""
    version = warehouse.reserve_model_version(data.fingerprint)
    model_uri = join_uri(job.models_root, version)
    metadata = _metadata(version, fit, data, store, job)
    write_version_folder(fit.model, metadata, model_uri)
    warehouse.record_training_clips(
        version,
        [
            (c.clip_id, split, str(c.label))
            for split, cs in data.training_set.clips.items()
            for c in cs
        ],
    )
    warehouse.register_model(
        model_version=version,
        model_uri=model_uri,
        settings_hash=store.settings_hash,
        fingerprint=data.fingerprint,
        class_names=data.training_set.class_names,
        metrics={
            **{k: v for k, v in fit.metrics.items() if k != "per_class"},
            "val_macro_f1": fit.val_metrics.get("macro_f1"),
        },
        streams=data.training_set.streams,
    )
    return get_model(warehouse, version)


def _metadata(
    version: str, fit: FitOutcome, data: TrainingData, store: FeatureStore, job: TrainingJob
) -> dict[str, Any]:
    """``metadata.json``: the one record of what this version is (its ``kind`` included)."""
    ts, state = data.training_set, fit.state
    return {
        "model_version": version,
        "kind": job.kind,
        "class_names": ts.class_names,
        "streams": list(ts.streams),
        "settings_hash": store.settings_hash,
        "feature_settings": job.feature_settings,
        "sequence_spec": asdict(job.sequence_spec),
        "fingerprint": data.fingerprint,
        "params": job.params.as_dict(),
        "counts": ts.counts,
        "examples": ts.examples,
        "data_report": data.report.as_dict(),
        "metrics": fit.metrics,
        "val_metrics": fit.val_metrics,
        "epochs_run": state.next_epoch,
        "best_epoch": None if state.best_epoch is None else state.best_epoch + 1,
        "resumed_from_epoch": fit.resumed_from_epoch,
        "train_seconds": fit.seconds,
        "tensorboard": join_uri(job.runs_root, data.fingerprint[:16], TENSORBOARD_DIR),
        "history": state.history,
    }


def _result(
    record: ModelRecord,
    data: TrainingData,
    fit: FitOutcome | None,
    gate: GateDecision,
    warehouse: Warehouse,
) -> TrainResult:
    production = warehouse.production_model()
    return TrainResult(
        model_version=record.model_version,
        model_uri=record.model_uri,
        kind=model_kind(read_metadata(record)),
        reused=fit is None,
        production=production is not None and production.model_version == record.model_version,
        class_names=record.class_names,
        streams=record.streams,
        counts=data.training_set.counts,
        metrics=fit.metrics if fit else record.metrics,
        val_metrics=fit.val_metrics if fit else {},
        gate=gate.as_dict(),
        epochs_run=fit.state.next_epoch if fit else 0,
        resumed_from_epoch=fit.resumed_from_epoch if fit else None,
        seconds=fit.seconds if fit else 0.0,
    )


def _log_result(result: TrainResult) -> None:
    if result.reused:
        return
    metrics = result.metrics
    log.info(
        "train: %s (%s, %s) saved to %s; %s accuracy %.3f, macro-F1 %.3f after %d epochs"
        " (%.1f s); %s",
        result.model_version,
        result.kind,
        "+".join(result.streams),
        result.model_uri,
        metrics.get("evaluated_on"),
        metrics.get("accuracy") or 0.0,
        metrics.get("macro_f1") or 0.0,
        result.epochs_run,
        result.seconds,
        "promoted to production"
        if result.production
        else f"kept as candidate ({result.gate.get('reason', 'not promoted')})",
    )
