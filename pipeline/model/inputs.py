"""Model inputs: the ``tf.data`` pipelines training reads, and one segment as a model reads it.

Two sources feed the models:

* cached features (the head): TFRecord ``SequenceExample`` parts of the feature store, one
  example per clip segment, ``{stream: (frames, 512)}``; only the parts holding the split's
  clips are read (the store's index says which), and the features are kept in memory only
  when they fit :data:`CACHE_BUDGET_BYTES`, otherwise streamed from the parts every epoch;
* decoded media (the end-to-end model): images decoded from the stored media files segment by
  segment while training runs (memory holds one segment of one clip), ``{stream: (frames, S, S,
  3) uint8, stream_mask: (frames,) bool}``.

Both pad each batch to its longest sequence (at least one step, so an absent stream is a fully
masked sequence) and carry the clip id of every example, for clip-level metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pipeline import storage
from pipeline.errors import MediaError, StoreError
from pipeline.features.identity import FEATURE_DIM
from pipeline.features.index import frames_bytes
from pipeline.features.store import FeatureStore, parse_sequence_example
from pipeline.media.sequences import SequenceSpec, iter_clip_images
from pipeline.warehouse.database import ClipRecord

if TYPE_CHECKING:
    from pipeline.media.decode import Segment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """The clips of one split with their class indices, and how many usable segments they have
    (found in the feature store, or planned from the clips' durations for the media)."""

    clips: Sequence[ClipRecord]
    labels: Mapping[str, int]  # clip id -> class index
    examples: int


#: Features of a split up to this size (float32, from the index's frame counts) are read once
#: and kept in memory; a larger split is streamed from its TFRecord parts every epoch.
CACHE_BUDGET_BYTES = 1 << 30
#: Segments in the shuffle buffer of a streamed split (about 20 MB at 5 frames a segment).
STREAM_SHUFFLE_SEGMENTS = 2048


def feature_dataset(
    source: FeatureStore | Sequence[str],
    split: Split,
    streams: Sequence[str],
    n_classes: int,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    cache_budget_bytes: int | None = None,
) -> Any:
    """``tf.data`` of ``({stream: (batch, frames, 512)}, one-hot, clip_ids)`` from TFRecords.

    ``source`` is a feature store, or TFRecord parts of one (``store.tfrecord_parts()``); only
    the parts holding the split's clips are read. Keeps segments of the split's clips that have
    frames in ``streams``; the label index is looked up by clip id (so labels can change
    without re-extracting).

    When the split's features fit ``cache_budget_bytes`` (default :data:`CACHE_BUDGET_BYTES`)
    they are read once and kept in memory, in (clip id, segment) order before the seeded
    shuffle, so the batches depend on the data and the seed only, not on how extraction
    happened to lay the features out in parts. A larger split is streamed: each epoch reads
    the parts (in a seeded order) and shuffles within :data:`STREAM_SHUFFLE_SEGMENTS`
    segments; the batches are then deterministic for a seed and a part layout, and hold the
    same examples every epoch.
    """
    from pipeline.tfenv import enable_object_store_filesystems, tf

    files, store = _split_files(source, split)
    if any(storage.is_remote(f) for f in files):
        enable_object_store_filesystems()
    budget = CACHE_BUDGET_BYTES if cache_budget_bytes is None else cache_budget_bytes
    usable = _usable_rows(store, split, streams) if store is not None else None
    size = frames_bytes(usable, streams) if usable is not None else 0
    if usable is None or size <= budget:
        examples = _read_examples(files, split, streams)
        dataset = _cached(examples, streams)
        buffer = len(examples)
    else:
        if usable.num_rows != split.examples:
            raise StoreError(
                f"the feature store's index lists {usable.num_rows} usable segments of this "
                "split where "
                f"{split.examples} were selected; run `stpipe features verify`"
            )
        log.info(
            "streaming %d segments (%.1f GB of features, over the %.1f GB cache budget) "
            "from %d parts",
            split.examples,
            size / 1e9,
            budget / 1e9,
            len(files),
        )
        dataset = _streamed(files, split, streams, shuffle_seed)
        buffer = min(split.examples, STREAM_SHUFFLE_SEGMENTS)
    dataset = dataset.map(lambda inputs, label, clip: (inputs, tf.one_hot(label, n_classes), clip))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(max(1, buffer), seed=shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.padded_batch(
        batch_size,
        padded_shapes=({s: [None, FEATURE_DIM] for s in streams}, [n_classes], []),
        padding_values=({s: 0.0 for s in streams}, 0.0, b""),
    )
    batches = -(-split.examples // batch_size)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    return dataset.prefetch(tf.data.AUTOTUNE)


def _split_files(
    source: FeatureStore | Sequence[str], split: Split
) -> tuple[list[str], FeatureStore | None]:
    """The TFRecord parts holding the split's clips, and their store (None when ``source`` is
    files from no one store: then every file is read, as given)."""
    if isinstance(source, FeatureStore):
        return source.tfrecord_parts(split.labels), source
    folders = {f.rsplit("/tfrecords/", 1)[0] for f in source}
    if len(folders) != 1 or "/" not in next(iter(folders)):
        return list(source), None
    root, settings_hash = next(iter(folders)).rsplit("/", 1)
    store = FeatureStore(root, settings_hash)
    given = set(source)
    return [f for f in store.tfrecord_parts(split.labels) if f in given], store


def _usable_rows(store: FeatureStore, split: Split, streams: Sequence[str]) -> Any:
    """Index rows of the split's segments that have frames in ``streams``."""
    import pyarrow.compute as pc

    rows = store.index().rows(split.labels)
    has_frames = [pc.greater(rows.column(f"{s}_frames"), 0) for s in streams]
    mask = has_frames[0]
    for other in has_frames[1:]:
        mask = pc.or_(mask, other)
    return rows.filter(mask)


def _cached(
    examples: list[tuple[dict[str, npt.NDArray[np.float32]], int, bytes]], streams: Sequence[str]
) -> Any:
    from pipeline.tfenv import tf

    signature = (
        {s: tf.TensorSpec((None, FEATURE_DIM), tf.float32) for s in streams},
        tf.TensorSpec((), tf.int64),
        tf.TensorSpec((), tf.string),
    )
    dataset = tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)
    return dataset.cache()


def _streamed(
    files: Sequence[str], split: Split, streams: Sequence[str], shuffle_seed: int | None
) -> Any:
    """``(inputs, class, clip_id)`` of the split's usable segments, read from ``files`` every
    epoch (parts in a seeded order when shuffled, a few read at a time)."""
    from pipeline.tfenv import tf

    clips = sorted(split.labels)
    labels = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(clips, tf.string),
            tf.constant([split.labels[c] for c in clips], tf.int64),
        ),
        default_value=-1,
    )
    empty = tf.zeros((1, FEATURE_DIM), tf.float32)

    def usable(parsed: dict[str, Any]) -> Any:
        frames = tf.stack([tf.shape(parsed[s])[0] for s in streams])
        return tf.logical_and(labels.lookup(parsed["clip_id"]) >= 0, tf.reduce_any(frames > 0))

    def example(parsed: dict[str, Any]) -> Any:
        inputs = {
            s: tf.cond(tf.shape(parsed[s])[0] > 0, lambda s=s: parsed[s], lambda: empty)
            for s in streams
        }
        return inputs, labels.lookup(parsed["clip_id"]), parsed["clip_id"]

    dataset = tf.data.Dataset.from_tensor_slices(list(files))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
        cycle_length=min(4, max(1, len(files))),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    dataset = dataset.map(parse_sequence_example, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.filter(usable).map(example, num_parallel_calls=tf.data.AUTOTUNE)


def _read_examples(
    files: Sequence[str], split: Split, streams: Sequence[str]
) -> list[tuple[dict[str, npt.NDArray[np.float32]], int, bytes]]:
    """The split's usable segments as ``({stream: (frames, 512)}, class, clip_id)``, sorted by
    (clip id, segment index); an empty stream becomes one zero frame (fully masked)."""
    from pipeline.tfenv import tf

    keyed = []
    dataset = tf.data.TFRecordDataset(list(files), compression_type="GZIP")
    for parsed in dataset.map(parse_sequence_example).as_numpy_iterator():
        clip_id = parsed["clip_id"].decode()
        label = split.labels.get(clip_id)
        if label is None or not any(parsed[s].shape[0] for s in streams):
            continue
        inputs = {s: parsed[s] if parsed[s].shape[0] else _ONE_EMPTY_STEP for s in streams}
        keyed.append(((clip_id, int(parsed["segment_index"])), (inputs, label, parsed["clip_id"])))
    if len(keyed) != split.examples:
        # Each committed segment is in exactly one part; anything else is a damaged store.
        raise StoreError(
            f"the feature store holds {len(keyed)} usable segments of this split where its "
            f"index says {split.examples}; run `stpipe features verify`"
        )
    keyed.sort(key=lambda item: item[0])
    return [example for _, example in keyed]


_ONE_EMPTY_STEP = np.zeros((1, FEATURE_DIM), np.float32)


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
    the media files segment by segment (the end-to-end model's input). With ``shuffle_seed`` the
    clip order changes every epoch (seeded).

    The number of batches is left unknown: ``split.examples`` is planned from the clips'
    durations, and what decoding yields can differ (a clip with no decodable segment in
    ``streams`` yields nothing, and one that fails to decode is skipped from the failure on, with
    a warning). Keras runs each epoch to the end of the data.
    """
    from pipeline.tfenv import tf

    size = spec.image_size
    epoch = [0]

    def generate() -> Iterator[tuple[dict[str, Any], Any, bytes]]:
        order = sorted(split.clips, key=lambda c: c.clip_id)
        if shuffle_seed is not None:
            permutation = np.random.default_rng(shuffle_seed + epoch[0]).permutation(len(order))
            order = [order[i] for i in permutation]
            epoch[0] += 1
        for clip in order:
            one_hot = np.zeros(n_classes, np.float32)
            one_hot[split.labels[clip.clip_id]] = 1.0
            try:
                for _, images in iter_clip_segments(clip, spec, streams):
                    if any(images[s].shape[0] for s in streams):
                        yield end_to_end_inputs(images, spec), one_hot, clip.clip_id.encode()
            except MediaError as exc:  # ingest decoded it once; one bad clip must not end a fit
                log.warning(
                    "skipping the rest of clip %s (%s): %s", clip.clip_id[:12], clip.uri, exc
                )

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
    return dataset.prefetch(2)


def iter_clip_segments(
    clip: ClipRecord, spec: SequenceSpec, streams: Sequence[str]
) -> Iterator[tuple[Segment, dict[str, npt.NDArray[np.uint8]]]]:
    """A clip's images segment by segment: ``(segment, {stream: (frames, S, S, 3) uint8})`` in
    segment order, each yielded as soon as it is decoded (memory holds one segment). Every
    stream of ``streams`` is a key; one the clip does not have is ``(0, S, S, 3)``. A clip with
    none of ``streams`` yields nothing (and is not decoded).

    Raises:
        MediaError: the clip cannot be decoded (see
            :func:`~pipeline.media.sequences.iter_clip_images`).
    """
    empty = np.zeros((0, spec.image_size, spec.image_size, 3), np.uint8)
    wanted = [s for s in streams if s in spec.streams_for(clip.modality or "")]
    if not wanted:
        return
    uri, modality = clip.media_uri or clip.uri, clip.modality or ""
    items = iter_clip_images(uri, modality, spec, clip.duration_seconds, wanted)
    # iter_clip_images yields segment-major, so each segment's items are consecutive.
    for _, segment_items in groupby(items, key=lambda item: item.segment.index):
        decoded = {item.stream: item for item in segment_items}
        segment = next(iter(decoded.values())).segment
        yield segment, {s: decoded[s].images if s in decoded else empty for s in streams}


def end_to_end_inputs(
    images: Mapping[str, npt.NDArray[np.uint8]], spec: SequenceSpec
) -> dict[str, npt.NDArray[Any]]:
    """One segment as the end-to-end model reads it: ``{stream: (frames, S, S, 3) uint8,
    stream_mask: (frames,) bool}``; an absent stream is one black, masked image."""
    size = spec.image_size
    inputs: dict[str, npt.NDArray[Any]] = {}
    for stream, frames in images.items():
        present = frames.shape[0] > 0
        inputs[stream] = frames if present else np.zeros((1, size, size, 3), np.uint8)
        inputs[f"{stream}_mask"] = np.full(inputs[stream].shape[0], present)
    return inputs


def without_clip_ids(dataset: Any) -> Any:
    """The ``(inputs, labels)`` view Keras ``fit`` wants."""
    return dataset.map(lambda inputs, labels, _clips: (inputs, labels))
