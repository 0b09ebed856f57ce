"""Stage 3, train: fit the LSTM + MLP head on cached features and register a model version.

Input is a ``tf.data`` pipeline over the feature store's TFRecord parts; every clip segment is
one example, labelled with its clip's label. Labels and splits are looked up by clip id from the
warehouse at training time (features depend only on content and settings; labels may arrive
later). Padded frames are masked. Early stopping watches the validation split; metrics come
from the test split at clip level (a clip's segment probabilities are averaged). The model is
saved as ``DATA_DIR/models/<version>/model.keras`` with ``metadata.json`` beside it and
registered in the warehouse's ``model_versions``; the first version becomes production.

The head reads the streams the training data has (``streams="auto"``): video frames, audio
windows, or both (two-branch fusion); ``streams="video"`` or ``"audio"`` forces one.

Training is deterministic (seeded, TensorFlow op determinism on) and keyed by a fingerprint of
its data and hyper-parameters: re-running with nothing changed reuses the existing version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
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
from pipeline.evaluate import classification_metrics
from pipeline.feature_store import FEATURE_DIM, FeatureStore, parse_sequence_example
from pipeline.warehouse import ClipRecord, Warehouse

log = logging.getLogger(__name__)

#: Bump when training code changes what the same data and parameters produce.
TRAINER_VERSION = 2
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

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 0:
            raise ValueError("epochs and batch_size must be >= 1 and patience >= 0")
        if not 0 < self.learning_rate < 1:
            raise ValueError("learning_rate must be in (0, 1)")
        if self.streams not in STREAM_CHOICES:
            raise ValueError(f"streams must be one of {STREAM_CHOICES}")


@dataclass
class TrainResult:
    model_version: str
    model_uri: str
    reused: bool
    production: bool
    class_names: list[str]
    streams: list[str]
    counts: dict[str, int]
    metrics: dict[str, Any] = field(default_factory=dict)
    epochs_run: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        summary = asdict(self)
        # XCom stays small: drop the per-class table and confusion matrix.
        summary["metrics"] = {
            k: v for k, v in self.metrics.items() if k not in ("per_class", "confusion_matrix")
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


def select_training_set(
    labelled: Sequence[ClipRecord],
    segment_frames: dict[str, list[dict[str, int]]],
    streams: str = "auto",
) -> TrainingSet:
    """Split the labelled clips that have features; choose the streams; check the data.

    Args:
        labelled: labelled ``ok`` clips.
        segment_frames: per clip id, per segment, frames per stream (from the feature store).
        streams: ``auto`` (whatever the training clips have), ``video``, ``audio`` or ``both``.

    Raises:
        DataValidationError: no features, or fewer than two classes in the train split.
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
    log.info(
        "training set (%s): clips per split %s, segments %s; per class (train): %s",
        "+".join(chosen),
        {s: len(v) for s, v in by_split.items()},
        examples,
        dict(sorted(train_counts.items())),
    )
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
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(variance))):
        raise DataValidationError(f"training {stream} features contain NaN or infinite values")
    return mean.astype(np.float32), variance.astype(np.float32)


def make_dataset(
    files: Sequence[str],
    training_set: TrainingSet,
    split: str,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    with_clip_ids: bool = False,
) -> Any:
    """``tf.data`` of ``({stream: (batch, frames, 512)}, one-hot (batch, classes))`` for a split.

    Reads the TFRecord parts, keeps segments of the split's clips that have frames in the
    model's streams, looks up the label index by clip id, and pads each batch to its longest
    sequence with zero frames (masked by the model; at least one step per stream). With
    ``with_clip_ids`` each element also carries the batch's clip ids (for clip-level metrics).
    """
    from pipeline.tfenv import enable_object_store_filesystems, tf

    if any(storage.is_remote(f) for f in files):
        enable_object_store_filesystems()

    streams = training_set.streams
    class_index = {name: i for i, name in enumerate(training_set.class_names)}
    clips = training_set.clips[split]
    keys = tf.constant([c.clip_id for c in clips] or [""], tf.string)
    values = tf.constant([class_index[str(c.label)] for c in clips] or [-1], tf.int64)
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), -1)
    n_classes = len(training_set.class_names)

    def parse(serialized: Any) -> tuple[Any, Any, Any]:
        parsed = parse_sequence_example(serialized)
        label = table.lookup(parsed["clip_id"])
        frames = tf.add_n([tf.shape(parsed[s])[0] for s in streams])
        label = tf.where(frames > 0, label, tf.constant(-1, tf.int64))
        inputs = {s: _at_least_one_step(tf, parsed[s]) for s in streams}
        return inputs, label, parsed["clip_id"]

    dataset = tf.data.TFRecordDataset(list(files), compression_type="GZIP")
    dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.filter(lambda _inputs, label, _clip: label >= 0)
    dataset = dataset.map(lambda inputs, label, clip: (inputs, tf.one_hot(label, n_classes), clip))
    dataset = dataset.cache()
    if shuffle_seed is not None:
        dataset = dataset.shuffle(
            max(1, training_set.examples[split]), seed=shuffle_seed, reshuffle_each_iteration=True
        )
    dataset = dataset.padded_batch(
        batch_size,
        padded_shapes=({s: [None, FEATURE_DIM] for s in streams}, [n_classes], []),
        padding_values=({s: 0.0 for s in streams}, 0.0, b""),
    )
    if not with_clip_ids:
        dataset = dataset.map(lambda inputs, labels, _clips: (inputs, labels))
    # Each committed segment is in exactly one part, so the batch count is known; telling
    # tf.data lets Keras size its epochs (and fails loudly if the store holds a clip twice).
    batches = -(-training_set.examples[split] // batch_size)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    return dataset.prefetch(tf.data.AUTOTUNE)


def _at_least_one_step(tf: Any, frames: Any) -> Any:
    """An empty sequence becomes one zero frame (fully masked), so every batch has a step."""
    return tf.cond(
        tf.shape(frames)[0] > 0, lambda: frames, lambda: tf.zeros([1, FEATURE_DIM], tf.float32)
    )


def train_head(
    labelled: Sequence[ClipRecord],
    store: FeatureStore,
    warehouse: Warehouse,
    *,
    models_root: str,
    feature_settings: dict[str, Any],
    params: TrainParams,
    promote: bool | None = None,
) -> TrainResult:
    """Train, evaluate, save and register a head model on the labelled clips' cached features.

    Args:
        labelled: labelled ``ok`` clips from the warehouse.
        store: feature store of the settings hash the model will read.
        warehouse: registry of model versions.
        models_root: where model folders are written.
        feature_settings: recorded in the model's metadata.
        params: hyper-parameters.
        promote: True makes the new version production; None promotes it only when no
            production model exists yet (the first version); False never does.
    """
    training_set = select_training_set(labelled, store.segment_frames(), params.streams)
    fingerprint = training_fingerprint(training_set, store.settings_hash, params)
    existing = warehouse.model_with_fingerprint(fingerprint)
    if existing is not None:
        log.info(
            "train: %s was trained on exactly this data and these parameters; reusing it",
            existing.model_version,
        )
        if promote and existing.stage != "production":
            warehouse.promote_model(existing.model_version)
        current = warehouse.production_model()
        return TrainResult(
            model_version=existing.model_version,
            model_uri=existing.model_uri,
            reused=True,
            production=current is not None and current.model_version == existing.model_version,
            class_names=existing.class_names,
            streams=existing.streams,
            counts=training_set.counts,
            metrics=existing.metrics,
        )

    from pipeline.model import build_sequence_head
    from pipeline.tfenv import keras, tf

    started = time.perf_counter()
    keras.utils.set_random_seed(params.seed)
    tf.config.experimental.enable_op_determinism()
    files = store.tfrecord_parts()
    train_ids = [c.clip_id for c in training_set.clips["train"]]
    statistics = {s: feature_statistics(store, train_ids, s) for s in training_set.streams}
    model = build_sequence_head(
        len(training_set.class_names), statistics, learning_rate=params.learning_rate
    )
    train_ds = make_dataset(
        files, training_set, "train", params.batch_size, shuffle_seed=params.seed
    )
    has_val = bool(training_set.examples["val"])
    val_ds = make_dataset(files, training_set, "val", params.batch_size) if has_val else None
    if not has_val:
        log.warning("no validation clips: early stopping watches the training loss instead")
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss" if has_val else "loss",
            patience=params.patience,
            restore_best_weights=True,
        ),
        keras.callbacks.LambdaCallback(on_epoch_end=_log_epoch),
    ]
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=params.epochs,
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles itself, seeded
        verbose=0,
    )
    eval_split = "test" if training_set.examples["test"] else "val" if has_val else "train"
    if eval_split != "test":
        log.warning("no test clips: metrics below are on the %s split", eval_split)
    eval_ds = make_dataset(files, training_set, eval_split, 256, with_clip_ids=True)
    metrics = evaluate_clips(model, eval_ds, training_set.class_names)
    metrics["evaluated_on"] = eval_split
    epochs_run = len(history.history.get("loss", []))
    seconds = round(time.perf_counter() - started, 2)

    version = _next_version(warehouse)
    model_uri = join_uri(models_root, version)
    metadata = {
        "model_version": version,
        "kind": "sequence_head",
        "class_names": training_set.class_names,
        "streams": list(training_set.streams),
        "settings_hash": store.settings_hash,
        "feature_settings": feature_settings,
        "fingerprint": fingerprint,
        "params": asdict(params),
        "counts": training_set.counts,
        "examples": training_set.examples,
        "metrics": metrics,
        "epochs_run": epochs_run,
        "train_seconds": seconds,
        "history": {k: [round(float(x), 5) for x in v] for k, v in history.history.items()},
    }
    _save_model(model, metadata, model_uri)
    warehouse.register_model(
        model_version=version,
        model_uri=model_uri,
        settings_hash=store.settings_hash,
        fingerprint=fingerprint,
        class_names=training_set.class_names,
        metrics={k: v for k, v in metrics.items() if k != "per_class"},
        streams=training_set.streams,
    )
    make_production = promote if promote is not None else warehouse.production_model() is None
    if make_production:
        warehouse.promote_model(version)
    log.info(
        "train: %s (%s) saved to %s; %s accuracy %.3f, macro-F1 %.3f after %d epochs (%.1f s)%s",
        version,
        "+".join(training_set.streams),
        model_uri,
        eval_split,
        metrics.get("accuracy") or 0.0,
        metrics.get("macro_f1") or 0.0,
        epochs_run,
        seconds,
        "; promoted to production" if make_production else "",
    )
    return TrainResult(
        model_version=version,
        model_uri=model_uri,
        reused=False,
        production=make_production,
        class_names=training_set.class_names,
        streams=list(training_set.streams),
        counts=training_set.counts,
        metrics=metrics,
        epochs_run=epochs_run,
        seconds=seconds,
    )


def evaluate_clips(model: Any, dataset: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """Clip-level metrics: each clip's segment probabilities are averaged, then compared with
    its label. ``dataset`` yields ``(inputs, one_hot, clip_ids)`` batches."""
    sums: dict[bytes, npt.NDArray[np.float64]] = {}
    truth: dict[bytes, int] = {}
    for inputs, one_hot, clip_ids in dataset:
        probabilities = np.asarray(model.predict_on_batch(inputs), dtype=np.float64)
        labels = np.argmax(one_hot.numpy(), axis=1)
        for clip_id, probs, label in zip(clip_ids.numpy(), probabilities, labels, strict=True):
            sums[clip_id] = sums.get(clip_id, 0.0) + probs
            truth[clip_id] = int(label)
    if not sums:
        return {"accuracy": None, "macro_f1": None, "examples": 0}
    ids = sorted(sums)
    y_true = np.array([truth[c] for c in ids])
    y_pred = np.array([int(np.argmax(sums[c])) for c in ids])
    return classification_metrics(y_true, y_pred, class_names)


def _next_version(warehouse: Warehouse) -> str:
    numbers = [
        int(m.model_version[1:])
        for m in warehouse.models()
        if m.model_version.startswith("v") and m.model_version[1:].isdigit()
    ]
    return f"v{max(numbers, default=0) + 1:04d}"


def _save_model(model: Any, metadata: dict[str, Any], model_uri: str) -> None:
    """Write model.keras, then metadata.json (the folder's commit marker), each atomically."""
    with tempfile.TemporaryDirectory(prefix="stpipe-model-") as tmp:
        local = Path(tmp, "model.keras")
        model.save(local)
        storage.copy_file(str(local), join_uri(model_uri, "model.keras"))
    storage.write_bytes(
        join_uri(model_uri, "metadata.json"),
        json.dumps(metadata, indent=2, sort_keys=True).encode(),
    )


def _log_epoch(epoch: int, logs: dict[str, float] | None) -> None:
    shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted((logs or {}).items()))
    log.info("epoch %d: %s", epoch + 1, shown)
