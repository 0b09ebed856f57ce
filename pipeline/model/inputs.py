"""Model inputs: ``tf.data`` pipelines for training, and segment predictions for scoring.

Two sources feed the models:

* cached features (the head): TFRecord ``SequenceExample`` parts of the feature store, one
  example per clip segment, ``{stream: (frames, 512)}``;
* decoded media (the end-to-end model): images decoded from the stored media files clip by clip
  while training runs (never all in memory), ``{stream: (frames, S, S, 3) uint8,
  stream_mask: (frames,) bool}``.

Both pad each batch to its longest sequence (at least one step, so an absent stream is a fully
masked sequence) and carry the clip id of every example, for clip-level metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline import storage
from pipeline.features.identity import FEATURE_DIM
from pipeline.features.store import (
    FeatureStore,
    SegmentFeatures,
    parse_sequence_example,
)
from pipeline.media.sequences import SequenceSpec, iter_clip_images
from pipeline.warehouse.database import ClipRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """The clips of one split with their class indices, and how many usable segments they have."""

    clips: Sequence[ClipRecord]
    labels: Mapping[str, int]  # clip id -> class index
    examples: int


def feature_dataset(
    files: Sequence[str],
    split: Split,
    streams: Sequence[str],
    n_classes: int,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
) -> Any:
    """``tf.data`` of ``({stream: (batch, frames, 512)}, one-hot, clip_ids)`` from TFRecords.

    Keeps segments of the split's clips that have frames in ``streams``; the label index is looked
    up by clip id (so labels can change without re-extracting).
    """
    from pipeline.tfenv import enable_object_store_filesystems, tf

    if any(storage.is_remote(f) for f in files):
        enable_object_store_filesystems()
    keys = tf.constant([c.clip_id for c in split.clips] or [""], tf.string)
    values = tf.constant([split.labels[c.clip_id] for c in split.clips] or [-1], tf.int64)
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), -1)

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
            max(1, split.examples), seed=shuffle_seed, reshuffle_each_iteration=True
        )
    dataset = dataset.padded_batch(
        batch_size,
        padded_shapes=({s: [None, FEATURE_DIM] for s in streams}, [n_classes], []),
        padding_values=({s: 0.0 for s in streams}, 0.0, b""),
    )
    # Each committed segment is in exactly one part, so the batch count is known; telling
    # tf.data lets Keras size its epochs (and fails loudly if the store holds a clip twice).
    batches = -(-split.examples // batch_size)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    return dataset.prefetch(tf.data.AUTOTUNE)


def _at_least_one_step(tf: Any, frames: Any) -> Any:
    """An empty sequence becomes one zero frame (fully masked), so every batch has a step."""
    return tf.cond(
        tf.shape(frames)[0] > 0, lambda: frames, lambda: tf.zeros([1, FEATURE_DIM], tf.float32)
    )


def media_dataset(
    split: Split,
    streams: Sequence[str],
    n_classes: int,
    batch_size: int,
    spec: SequenceSpec,
    *,
    shuffle_seed: int | None = None,
) -> Any:
    """``tf.data`` of ``({stream: images, stream_mask: mask}, one-hot, clip_ids)`` decoded from
    the media files clip by clip (the end-to-end model's input). With ``shuffle_seed`` the clip
    order changes every epoch (seeded)."""
    from pipeline.tfenv import tf

    size = spec.image_size
    epoch = [0]

    def generate() -> Iterator[tuple[dict[str, Any], Any, bytes]]:
        order = list(split.clips)
        if shuffle_seed is not None:
            permutation = np.random.default_rng(shuffle_seed + epoch[0]).permutation(len(order))
            order = [order[i] for i in permutation]
            epoch[0] += 1
        for clip in order:
            one_hot = np.zeros(n_classes, np.float32)
            one_hot[split.labels[clip.clip_id]] = 1.0
            for segment_images in decode_segments(clip, spec, streams):
                if not any(segment_images[s].shape[0] for s in streams):
                    continue
                inputs: dict[str, Any] = {}
                for stream in streams:
                    images = segment_images[stream]
                    if images.shape[0] == 0:
                        inputs[stream] = np.zeros((1, size, size, 3), np.uint8)
                        inputs[f"{stream}_mask"] = np.zeros(1, bool)
                    else:
                        inputs[stream] = images
                        inputs[f"{stream}_mask"] = np.ones(images.shape[0], bool)
                yield inputs, one_hot, clip.clip_id.encode()

    signature = (
        {
            **{s: tf.TensorSpec((None, size, size, 3), tf.uint8) for s in streams},
            **{f"{s}_mask": tf.TensorSpec((None,), tf.bool) for s in streams},
        },
        tf.TensorSpec((n_classes,), tf.float32),
        tf.TensorSpec((), tf.string),
    )
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    dataset = dataset.padded_batch(
        batch_size,
        padded_shapes=(
            {
                **{s: [None, size, size, 3] for s in streams},
                **{f"{s}_mask": [None] for s in streams},
            },
            [n_classes],
            [],
        ),
    )
    batches = -(-split.examples // batch_size)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    return dataset.prefetch(2)


def decode_segments(
    clip: ClipRecord, spec: SequenceSpec, streams: Sequence[str]
) -> list[dict[str, npt.NDArray[np.uint8]]]:
    """A clip's images per segment, ``[{stream: (frames, S, S, 3)}]`` (in segment order)."""
    empty = np.zeros((0, spec.image_size, spec.image_size, 3), np.uint8)
    segments: dict[int, dict[str, npt.NDArray[np.uint8]]] = {}
    wanted = [s for s in streams if s in spec.streams_for(clip.modality or "")]
    if wanted:
        uri, modality = clip.media_uri or clip.uri, clip.modality or ""
        for item in iter_clip_images(uri, modality, spec, clip.duration_seconds, wanted):
            segments.setdefault(item.segment.index, {})[item.stream] = item.images
    return [{s: segments[i].get(s, empty) for s in streams} for i in sorted(segments)]


def without_clip_ids(dataset: Any) -> Any:
    """The ``(inputs, labels)`` view Keras ``fit`` wants."""
    return dataset.map(lambda inputs, labels, _clips: (inputs, labels))


def clip_probabilities(
    model: Any, dataset: Any
) -> tuple[dict[bytes, npt.NDArray[np.float64]], dict[bytes, int]]:
    """Mean segment probabilities per clip, and each clip's true class, from a dataset of
    ``(inputs, one_hot, clip_ids)`` batches."""
    sums: dict[bytes, npt.NDArray[np.float64]] = {}
    counts: dict[bytes, int] = {}
    truth: dict[bytes, int] = {}
    for inputs, one_hot, clip_ids in dataset:
        probabilities = np.asarray(model.predict_on_batch(inputs), dtype=np.float64)
        labels = np.argmax(one_hot.numpy(), axis=1)
        for clip_id, probs, label in zip(clip_ids.numpy(), probabilities, labels, strict=True):
            sums[clip_id] = sums.get(clip_id, 0.0) + probs
            counts[clip_id] = counts.get(clip_id, 0) + 1
            truth[clip_id] = int(label)
    return {c: sums[c] / counts[c] for c in sums}, truth


def segment_predictions(
    model: Any,
    clips: Sequence[ClipRecord],
    streams: Sequence[str],
    *,
    store: FeatureStore | None,
    spec: SequenceSpec | None = None,
) -> dict[str, list[tuple[SegmentFeatures, npt.NDArray[np.float32]]]]:
    """Per clip, ``(segment, probabilities)`` for every segment with frames in ``streams``.

    A head reads the segments' features from ``store``; an end-to-end model (``spec`` given)
    decodes the clips' media. Clips without usable segments are absent from the result.
    """
    from pipeline.model.architecture import is_end_to_end, predict_probabilities

    result: dict[str, list[tuple[SegmentFeatures, npt.NDArray[np.float32]]]] = {}
    if not is_end_to_end(model):
        if store is None:
            raise ValueError("a feature-reading head needs the feature store")
        rows = store.read_segments((c.clip_id for c in clips), streams=streams)
        usable = [
            seg
            for segs in rows.values()
            for seg in segs
            if any(seg.stream(s).shape[0] for s in streams)
        ]
        probabilities = predict_probabilities(model, [seg.streams for seg in usable])
        for seg, probs in zip(usable, probabilities, strict=True):
            result.setdefault(seg.clip_id, []).append((seg, probs))
        return result
    if spec is None:
        raise ValueError("an end-to-end model needs the sequence spec it was trained with")
    from pipeline.media.decode import plan_segments

    for clip in clips:
        duration = clip.duration_seconds or 0.0
        planned = plan_segments(duration, spec.segment_seconds)
        for index, images in enumerate(decode_segments(clip, spec, streams)):
            if not any(images[s].shape[0] for s in streams):
                continue
            inputs = {}
            for stream in streams:
                frames = images[stream]
                present = frames.shape[0] > 0
                if not present:
                    frames = np.zeros((1, spec.image_size, spec.image_size, 3), np.uint8)
                inputs[stream] = frames[np.newaxis]
                inputs[f"{stream}_mask"] = np.full((1, frames.shape[0]), present)
            probs = np.asarray(model.predict_on_batch(inputs), dtype=np.float32)[0]
            segment = planned[min(index, len(planned) - 1)]
            meta = SegmentFeatures(
                clip.clip_id, index, len(planned), segment.start, segment.end, clip.modality or ""
            )
            result.setdefault(clip.clip_id, []).append((meta, probs))
    return result
