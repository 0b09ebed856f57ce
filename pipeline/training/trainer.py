"""Stage 3, train: fit a model, evaluate it, register it as a new version, gate its promotion.

Two models, one recipe (LSTM(256) -> Dense(1024, relu) -> softmax, Nadam(0.002), categorical
cross-entropy and accuracy):

* the **head** (default) reads cached VGG-16 features: a ``tf.data`` pipeline over the feature
  store's TFRecord parts, one example per clip segment;
* the **end-to-end** model (``end_to_end=True``) is the seed's
  ``TimeDistributed(VGG-16 + GAP)`` network, trained on images decoded from the media while it
  trains (``cnn_trainable`` fine-tunes VGG-16). Frozen, it computes exactly what the head
  computes on cached features (see tests/unit/test_parity.py), which is why caching is allowed.

Labels and splits come from the warehouse by clip id. Data is validated first
(:mod:`pipeline.validation`). Training checkpoints every epoch under
``DATA_DIR/models/_runs/<fingerprint>/``: a run killed at any point and started again resumes
from its last finished epoch. Seeds are fixed (TensorFlow op determinism on) and recorded; class
weights balance skewed labels; early stopping watches the validation loss and keeps the best
epoch; TensorBoard logs go beside the checkpoints. Metrics are clip-level (a clip's segment
probabilities averaged) on the validation and test splits; the version folder gets
``model.keras``, ``metadata.json``, ``confusion_matrix.png``, ``training_curves.png`` and
``MODEL_CARD.md``. The same data, settings and parameters as an existing version reuse it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline import storage
from pipeline.config import STREAMS, join_uri
from pipeline.errors import DataValidationError
from pipeline.features.identity import FEATURE_DIM
from pipeline.features.store import FeatureStore
from pipeline.media.sequences import SequenceSpec
from pipeline.model.inputs import (
    Split,
    clip_probabilities,
    feature_dataset,
    media_dataset,
    without_clip_ids,
)
from pipeline.training.evaluation import (
    classification_metrics,
    model_card,
    plot_confusion_matrix,
    plot_training_curves,
)
from pipeline.training.validation import validate_training_data
from pipeline.warehouse.database import ClipRecord, Warehouse

log = logging.getLogger(__name__)

#: Bump when training code changes what the same data and parameters produce.
TRAINER_VERSION = 3
SPLITS = ("train", "val", "test")
STREAM_CHOICES = ("auto", "video", "audio", "both")


@dataclass(frozen=True)
class TrainParams:
    """Hyper-parameters of a training run (the seed's defaults)."""

    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 0.002
    patience: int = 8
    seed: int = 1337
    streams: str = "auto"
    lstm_units: int = 256
    dropout: float = 0.0
    end_to_end: bool = False
    cnn_trainable: bool = False
    class_weights: str = "auto"  # auto (when labels are skewed) | on | off
    min_clips_per_class: int = 2

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 0 or self.lstm_units < 1:
            raise ValueError("epochs, batch_size and lstm_units must be >= 1 and patience >= 0")
        if not 0 < self.learning_rate < 1:
            raise ValueError("learning_rate must be in (0, 1)")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")
        if self.streams not in STREAM_CHOICES:
            raise ValueError(f"streams must be one of {STREAM_CHOICES}")
        if self.class_weights not in ("auto", "on", "off"):
            raise ValueError("class_weights must be auto, on or off")
        if self.cnn_trainable and not self.end_to_end:
            raise ValueError("cnn_trainable needs end_to_end (the head never sees the CNN)")


@dataclass
class TrainResult:
    model_version: str
    model_uri: str
    kind: str
    reused: bool
    production: bool
    class_names: list[str]
    streams: list[str]
    counts: dict[str, int]
    metrics: dict[str, Any] = field(default_factory=dict)
    val_metrics: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    epochs_run: int = 0
    resumed_from_epoch: int | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        summary = asdict(self)
        for key in ("metrics", "val_metrics"):  # XCom stays small
            summary[key] = {
                k: v for k, v in summary[key].items() if k not in ("per_class", "confusion_matrix")
            }
        return summary


@dataclass(frozen=True)
class TrainingSet:
    """Labelled clips with usable features, per split, and what the model will read."""

    clips: dict[str, list[ClipRecord]]
    class_names: list[str]
    streams: tuple[str, ...]
    examples: dict[str, int]  # usable segments per split

    @property
    def counts(self) -> dict[str, int]:
        return {split: len(self.clips[split]) for split in SPLITS}

    def split(self, name: str) -> Split:
        index = {label: i for i, label in enumerate(self.class_names)}
        clips = self.clips[name]
        return Split(clips, {c.clip_id: index[str(c.label)] for c in clips}, self.examples[name])


def select_training_set(
    labelled: Sequence[ClipRecord],
    segment_frames: dict[str, list[dict[str, int]]],
    streams: str = "auto",
) -> TrainingSet:
    """Split the labelled clips that have features and choose the streams the model reads.

    ``streams="auto"`` takes every stream some training clip has frames in. Clips without frames
    in the chosen streams, and val/test clips whose label is absent from train, are left out.

    Raises:
        DataValidationError: fewer than two classes in the train split.
    """
    with_features = [c for c in labelled if c.clip_id in segment_frames]
    missing = len(labelled) - len(with_features)
    if missing:
        log.warning("%d labelled clips have no features yet; run `stpipe extract`", missing)
    if streams == "auto":
        present = {
            s
            for c in with_features
            if c.split == "train"
            for seg in segment_frames[c.clip_id]
            for s, n in seg.items()
            if n
        }
        chosen = tuple(s for s in STREAMS if s in present)
    else:
        chosen = STREAMS if streams == "both" else (streams,)

    def usable(clip: ClipRecord) -> int:
        return sum(any(seg[s] for s in chosen) for seg in segment_frames[clip.clip_id])

    by_split: dict[str, list[ClipRecord]] = {s: [] for s in SPLITS}
    for clip in with_features:
        if usable(clip):
            by_split[clip.split].append(clip)
    train_counts = Counter(c.label for c in by_split["train"])
    if len(train_counts) < 2 or not chosen:
        raise DataValidationError(
            f"the train split needs labelled clips of at least two classes with "
            f"{'/'.join(chosen) or 'any'} features; found {dict(train_counts) or 'none'} "
            f"({len(labelled)} labelled clips, {missing} without features). Ingest labelled "
            "media (`stpipe ingest DIR --labelled`) and run `stpipe extract`."
        )
    class_names = sorted(str(label) for label in train_counts)
    for split in ("val", "test"):
        unknown = [c for c in by_split[split] if c.label not in train_counts]
        if unknown:
            log.warning("%d %s clips have labels absent from train; left out", len(unknown), split)
            by_split[split] = [c for c in by_split[split] if c.label in train_counts]
    examples = {split: sum(usable(c) for c in by_split[split]) for split in SPLITS}
    return TrainingSet(by_split, class_names, chosen, examples)


def training_fingerprint(training_set: TrainingSet, settings_hash: str, params: TrainParams) -> str:
    """Hash of everything that determines the trained model."""
    payload = {
        "trainer_version": TRAINER_VERSION,
        "settings_hash": settings_hash,
        "params": asdict(params),
        "streams": list(training_set.streams),
        "clips": sorted(
            (c.clip_id, c.label or "", c.split)
            for clips in training_set.clips.values()
            for c in clips
        ),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def feature_statistics(
    store: FeatureStore, clip_ids: Sequence[str], stream: str
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Per-dimension mean and variance ``(512,)`` over all ``stream`` frames of ``clip_ids``."""
    count = 0
    total = np.zeros(FEATURE_DIM, np.float64)
    total_sq = np.zeros(FEATURE_DIM, np.float64)
    for frames in store.iter_stream_frames(clip_ids, stream):
        count += frames.shape[0]
        total += frames.sum(axis=0, dtype=np.float64)
        total_sq += np.square(frames, dtype=np.float64).sum(axis=0)
    if count == 0:
        raise DataValidationError(f"no {stream} frames among the training clips")
    mean = total / count
    variance = np.maximum(total_sq / count - mean**2, 0.0)
    return mean.astype(np.float32), variance.astype(np.float32)


def class_weights(
    training_set: TrainingSet, mode: str, segment_frames: dict[str, list[dict[str, int]]]
) -> dict[int, float] | None:
    """Balanced class weights ``total / (classes * count)`` over training segments, when
    ``mode`` is ``on``, or ``auto`` and the largest class has over 1.5x the smallest's segments."""
    if mode == "off":
        return None
    index = {name: i for i, name in enumerate(training_set.class_names)}
    counts = Counter()  # type: Counter[int]
    for clip in training_set.clips["train"]:
        usable = sum(
            any(seg[s] for s in training_set.streams) for seg in segment_frames[clip.clip_id]
        )
        counts[index[str(clip.label)]] += usable
    if mode == "auto" and max(counts.values()) <= 1.5 * min(counts.values()):
        return None
    total = sum(counts.values())
    weights = {i: total / (len(counts) * n) for i, n in counts.items()}
    log.info(
        "class weights (labels are skewed): %s",
        {training_set.class_names[i]: round(w, 3) for i, w in weights.items()},
    )
    return weights


def train_model(
    labelled: Sequence[ClipRecord],
    store: FeatureStore,
    warehouse: Warehouse,
    *,
    models_root: str,
    runs_root: str,
    feature_settings: dict[str, Any],
    sequence_spec: SequenceSpec,
    cnn_weights: str,
    params: TrainParams,
    promote: bool | None = None,
    promotion_margin: float = 0.0,
) -> TrainResult:
    """Train, evaluate, save and register a model; then promote it if asked or if it passes the
    gate.

    Args:
        labelled: labelled ``ok`` clips from the warehouse.
        store: feature store of the current settings (the head's input; the data inventory and
            standardisation statistics of the end-to-end model too).
        warehouse: the registry.
        models_root: where version folders are written.
        runs_root: local folder for checkpoints and TensorBoard logs of runs in progress.
        feature_settings, sequence_spec: recorded in the metadata (the end-to-end model decodes
            media with ``sequence_spec``).
        cnn_weights: VGG-16 weights for the end-to-end model.
        params: hyper-parameters.
        promote: True promotes unconditionally, False never; None runs the promotion gate.
        promotion_margin: macro-F1 the candidate must gain over production to pass the gate.
    """
    segment_frames = store.segment_frames()
    training_set = select_training_set(labelled, segment_frames, params.streams)
    report = validate_training_data(
        training_set.clips,
        segment_frames,
        training_set.streams,
        store,
        min_clips_per_class=params.min_clips_per_class,
    )
    fingerprint = training_fingerprint(training_set, store.settings_hash, params)
    existing = warehouse.model_with_fingerprint(fingerprint)
    if existing is None:
        run_dir = Path(runs_root) / fingerprint[:16]
        # The same training started twice on this machine shares its checkpoints: the second
        # waits for the first, then reuses its version (the kernel drops a killed run's lock).
        with storage.file_lock(f"{run_dir}.lock"):
            existing = warehouse.model_with_fingerprint(fingerprint)
            if existing is None:
                return _train_new_version(
                    training_set,
                    segment_frames,
                    report.as_dict(),
                    fingerprint,
                    run_dir,
                    store,
                    warehouse,
                    models_root=models_root,
                    feature_settings=feature_settings,
                    sequence_spec=sequence_spec,
                    cnn_weights=cnn_weights,
                    params=params,
                    promote=promote,
                    promotion_margin=promotion_margin,
                )
    log.info(
        "train: %s was trained on exactly this data and these parameters; reusing it",
        existing.model_version,
    )
    gate = _promote(existing, warehouse, store.root, promote, promotion_margin)
    current = warehouse.production_model()
    return TrainResult(
        model_version=existing.model_version,
        model_uri=existing.model_uri,
        kind=existing.metrics.get("kind", "sequence_head"),
        reused=True,
        production=current is not None and current.model_version == existing.model_version,
        class_names=existing.class_names,
        streams=existing.streams,
        counts=training_set.counts,
        metrics=existing.metrics,
        gate=gate,
    )


def _train_new_version(
    training_set: TrainingSet,
    segment_frames: dict[str, list[dict[str, int]]],
    data_report: dict[str, Any],
    fingerprint: str,
    run_dir: Path,
    store: FeatureStore,
    warehouse: Warehouse,
    *,
    models_root: str,
    feature_settings: dict[str, Any],
    sequence_spec: SequenceSpec,
    cnn_weights: str,
    params: TrainParams,
    promote: bool | None,
    promotion_margin: float,
) -> TrainResult:
    """Fit (resuming from the run's checkpoints), evaluate, save, register and gate a new
    version. Its name is reserved in the warehouse first, and its folder appears complete or
    not at all, so trainings running at once never collide."""
    from pipeline.tfenv import keras, tf
    from pipeline.training.checkpoint import Checkpointer

    started = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    for partial in run_dir.glob(".tmp-*"):  # a save cut short by a kill
        partial.unlink()
    keras.utils.set_random_seed(params.seed)
    tf.config.experimental.enable_op_determinism()
    kind = "end_to_end" if params.end_to_end else "sequence_head"
    n_classes = len(training_set.class_names)

    def datasets_for(split: str, batch_size: int, shuffle_seed: int | None = None) -> Any:
        if params.end_to_end:
            return media_dataset(
                training_set.split(split),
                training_set.streams,
                n_classes,
                batch_size,
                sequence_spec,
                shuffle_seed=shuffle_seed,
            )
        return feature_dataset(
            store.tfrecord_parts(),
            training_set.split(split),
            training_set.streams,
            n_classes,
            batch_size,
            shuffle_seed=shuffle_seed,
        )

    state = _load_state(run_dir, fingerprint)
    resumed_from = None
    if state is not None:
        from pipeline.model.architecture import load_classifier

        model = load_classifier(str(run_dir / state["checkpoint"]), compile=True)
        resumed_from = state["epoch"] + 1
        log.info("train: resuming %s run %s after epoch %d", kind, fingerprint[:16], resumed_from)
    else:
        model = _build(kind, training_set, store, params, sequence_spec, cnn_weights)
        state = {
            "fingerprint": fingerprint,
            "epoch": -1,
            "best": None,
            "best_epoch": None,
            "best_weights": None,
            "checkpoint": None,
            "wait": 0,
            "history": {},
            "stopped": False,
        }
    has_val = bool(training_set.examples["val"])
    monitor = "val_loss" if has_val else "loss"
    if not has_val:
        log.warning("no validation clips: early stopping watches the training loss instead")
    if not state["stopped"] and state["epoch"] + 1 < params.epochs:
        model.fit(
            without_clip_ids(datasets_for("train", params.batch_size, params.seed)),
            validation_data=without_clip_ids(datasets_for("val", params.batch_size))
            if has_val
            else None,
            epochs=params.epochs,
            initial_epoch=state["epoch"] + 1,
            class_weight=class_weights(training_set, params.class_weights, segment_frames),
            callbacks=[
                Checkpointer(run_dir, state, monitor, params.patience),
                keras.callbacks.TensorBoard(
                    log_dir=str(run_dir / "tensorboard"), write_graph=False, profile_batch=0
                ),
            ],
            shuffle=False,  # the datasets shuffle themselves, seeded
            verbose=0,
        )
    if state.get("best_weights"):
        model.load_weights(run_dir / state["best_weights"])
    epochs_run = state["epoch"] + 1

    eval_split = "test" if training_set.examples["test"] else "val" if has_val else "train"
    if eval_split != "test":
        log.warning("no test clips: metrics below are on the %s split", eval_split)
    metrics = _evaluate(model, datasets_for(eval_split, 64), training_set.class_names)
    metrics["evaluated_on"] = eval_split
    metrics["kind"] = kind
    val_metrics = (
        _evaluate(model, datasets_for("val", 64), training_set.class_names) if has_val else {}
    )
    seconds = round(time.perf_counter() - started, 2)

    version = warehouse.reserve_model_version(fingerprint)
    model_uri = join_uri(models_root, version)
    metadata = {
        "model_version": version,
        "kind": kind,
        "class_names": training_set.class_names,
        "streams": list(training_set.streams),
        "settings_hash": store.settings_hash,
        "feature_settings": feature_settings,
        "sequence_spec": asdict(sequence_spec) if params.end_to_end else None,
        "fingerprint": fingerprint,
        "params": asdict(params),
        "counts": training_set.counts,
        "examples": training_set.examples,
        "data_report": data_report,
        "metrics": metrics,
        "val_metrics": val_metrics,
        "epochs_run": epochs_run,
        "best_epoch": None if state["best_epoch"] is None else state["best_epoch"] + 1,
        "resumed_from_epoch": resumed_from,
        "train_seconds": seconds,
        "tensorboard": str(run_dir / "tensorboard"),
        "history": state["history"],
    }
    _save_version(model, metadata, model_uri)
    warehouse.register_model(
        model_version=version,
        model_uri=model_uri,
        settings_hash=store.settings_hash,
        fingerprint=fingerprint,
        class_names=training_set.class_names,
        metrics={
            **{k: v for k, v in metrics.items() if k != "per_class"},
            "val_macro_f1": val_metrics.get("macro_f1"),
        },
        streams=training_set.streams,
    )
    for checkpoint in [*run_dir.glob("epoch-*.keras"), *run_dir.glob("best-*.weights.h5")]:
        checkpoint.unlink()  # the version folder has the model now
    registered = _registered(warehouse, version)
    gate = _promote(registered, warehouse, store.root, promote, promotion_margin)
    current = warehouse.production_model()
    is_production = current is not None and current.model_version == version
    log.info(
        "train: %s (%s, %s) saved to %s; %s accuracy %.3f, macro-F1 %.3f after %d epochs"
        " (%.1f s); %s",
        version,
        kind,
        "+".join(training_set.streams),
        model_uri,
        eval_split,
        metrics.get("accuracy") or 0.0,
        metrics.get("macro_f1") or 0.0,
        epochs_run,
        seconds,
        "promoted to production"
        if is_production
        else f"kept as candidate ({gate.get('reason', 'not promoted')})",
    )
    return TrainResult(
        model_version=version,
        model_uri=model_uri,
        kind=kind,
        reused=False,
        production=is_production,
        class_names=training_set.class_names,
        streams=list(training_set.streams),
        counts=training_set.counts,
        metrics=metrics,
        val_metrics=val_metrics,
        gate=gate,
        epochs_run=epochs_run,
        resumed_from_epoch=resumed_from,
        seconds=seconds,
    )


def _build(
    kind: str,
    training_set: TrainingSet,
    store: FeatureStore,
    params: TrainParams,
    spec: SequenceSpec,
    cnn_weights: str,
) -> Any:
    from pipeline.model.architecture import build_end_to_end_model, build_sequence_head

    train_ids = [c.clip_id for c in training_set.clips["train"]]
    statistics = {s: feature_statistics(store, train_ids, s) for s in training_set.streams}
    if kind == "end_to_end":
        return build_end_to_end_model(
            len(training_set.class_names),
            statistics,
            cnn_weights=cnn_weights,
            image_size=spec.image_size,
            seed=params.seed,
            cnn_trainable=params.cnn_trainable,
            learning_rate=params.learning_rate,
            lstm_units=params.lstm_units,
            dropout=params.dropout,
        )
    return build_sequence_head(
        len(training_set.class_names),
        statistics,
        learning_rate=params.learning_rate,
        lstm_units=params.lstm_units,
        dropout=params.dropout,
    )


def _evaluate(model: Any, dataset: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """Clip-level metrics: a clip's segment probabilities are averaged, then compared with its
    label."""
    probabilities, truth = clip_probabilities(model, dataset)
    if not probabilities:
        return {"accuracy": None, "macro_f1": None, "examples": 0}
    ids = sorted(probabilities)
    y_true = np.array([truth[c] for c in ids])
    y_pred = np.array([int(np.argmax(probabilities[c])) for c in ids])
    return classification_metrics(y_true, y_pred, class_names)


def _promote(
    record: Any,
    warehouse: Warehouse,
    features_root: str,
    promote: bool | None,
    margin: float,
) -> dict[str, Any]:
    from pipeline.registry.gate import promotion_gate

    if promote is False:
        return {"promote": False, "reason": "promotion not requested (--no-promote)"}
    if promote is True:
        warehouse.promote_model(record.model_version)
        return {"promote": True, "reason": "promoted by request (--promote)"}
    decision = promotion_gate(record, warehouse, features_root, margin=margin)
    if decision.promote:
        warehouse.promote_model(record.model_version)
    result: dict[str, Any] = decision.as_dict()
    return result


def _registered(warehouse: Warehouse, version: str) -> Any:
    from pipeline.registry.gate import get_model

    return get_model(warehouse, version)


def _load_state(run_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    """The state of an interrupted run of the same training, if its checkpoint is complete."""
    state_file = run_dir / "state.json"
    if not state_file.exists():
        return None
    state: dict[str, Any] = json.loads(state_file.read_text())
    complete = (run_dir / str(state.get("checkpoint"))).exists()
    return state if complete and state.get("fingerprint") == fingerprint else None


def _save_version(model: Any, metadata: dict[str, Any], model_uri: str) -> None:
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


#: Hyper-parameters a tuning grid may vary, and the types their values must have.
TUNABLE = {"lstm_units": int, "learning_rate": float, "dropout": float, "batch_size": int}


def candidate_grid(base: dict[str, Any], grid: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values on top of ``base`` (one candidate if empty).

    Raises:
        ValueError: a grid key is not tunable or its values are not a non-empty list.
    """
    import itertools

    for key, values in grid.items():
        if key not in TUNABLE:
            raise ValueError(f"cannot tune {key!r}; tunable: {', '.join(TUNABLE)}")
        if not isinstance(values, list | tuple) or not values:
            raise ValueError(f"grid values for {key!r} must be a non-empty list")
    keys = sorted(grid)
    combos = itertools.product(*(grid[k] for k in keys)) if keys else [()]
    candidates = []
    for combo in combos:
        candidate = {**base, **{k: TUNABLE[k](v) for k, v in zip(keys, combo, strict=True)}}
        TrainParams(**candidate)  # validate early, before any task trains
        candidates.append(candidate)
    return candidates


def best_candidate(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The candidate with the highest validation macro-F1 (ties: the earliest version)."""
    if not results:
        raise DataValidationError("no candidate model was trained")
    ranked = sorted(
        results,
        key=lambda r: (-((r.get("val_metrics") or {}).get("macro_f1") or 0.0), r["model_version"]),
    )
    return ranked[0]
