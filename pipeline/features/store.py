"""The feature store: VGG-16 features per clip segment, keyed by (clip id, settings hash).

Layout under ``DATA_DIR/features/<settings_hash>/``::

    settings.json                       the settings this folder holds (both streams' hashes)
    parquet/part-<id>.parquet           one row per clip segment (analysts, scoring, checks)
    tfrecords/part-<id>.tfrecord.gz     the same rows as SequenceExamples (training input)
    index/                              which part holds each clip (:mod:`.index`)

A row holds both *streams* of a segment: ``video`` (sampled frames) and ``audio`` (spectrogram
windows; for a video, its audio track). A stream a clip does not have is an empty list. Each
stream has its own settings hash (``video_hash``, ``audio_hash``): when only one stream's
settings change, the other stream's features are copied from the folder that has them instead of
being computed again.

A part is written TFRecord first, then its index entry, Parquet last, each atomically; the
Parquet file is the commit marker. Readers find parts through the index, which trusts an entry
only when its Parquet file exists, so a crash between the writes leaves an ignored orphan
rather than a half-visible part; no reader lists the parts or opens one it does not need. All
rows of a clip are in one part.

Parquet schema: ``clip_id`` string, ``segment_index`` / ``n_segments`` int32,
``start_seconds`` / ``end_seconds`` float64, ``modality`` string (of the clip), ``settings_hash``
/ ``video_hash`` / ``audio_hash`` string, ``video_frames`` / ``audio_frames`` int32,
``video`` / ``audio`` list<fixed_size_list<float32, 512>>, ``extracted_at`` timestamp (UTC).

TFRecord ``SequenceExample``: context ``clip_id``, ``modality`` (bytes), ``segment_index``,
``n_segments`` (int64), ``start_seconds``, ``end_seconds`` (float); feature lists ``video`` and
``audio``: one 512-float ``FloatList`` per frame.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.config import STREAMS, Settings, join_uri
from pipeline.errors import StoreError, describe
from pipeline.features.identity import FEATURE_DIM
from pipeline.features.index import (
    EMPTY_INDEX,
    FRAME_COLUMNS,
    Compaction,
    FeatureIndex,
    IndexReader,
    compact,
    entry_table,
    read_part,
    unindexed_parts,
    write_entry,
)

log = logging.getLogger(__name__)

_SEQUENCE = pa.list_(pa.list_(pa.float32(), FEATURE_DIM))
PARQUET_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("segment_index", pa.int32()),
        ("n_segments", pa.int32()),
        ("start_seconds", pa.float64()),
        ("end_seconds", pa.float64()),
        ("modality", pa.string()),
        ("settings_hash", pa.string()),
        ("video_hash", pa.string()),
        ("audio_hash", pa.string()),
        ("video_frames", pa.int32()),
        ("audio_frames", pa.int32()),
        ("video", _SEQUENCE),
        ("audio", _SEQUENCE),
        ("extracted_at", pa.timestamp("us", tz="UTC")),
    ]
)
#: A writer compacts the index after this many parts if as many entries are uncompacted, so a
#: folder stays one compacted file plus a few entries even if nobody runs `features compact`.
COMPACT_EVERY_PARTS = 64
_META_COLUMNS = [
    "clip_id",
    "segment_index",
    "n_segments",
    "start_seconds",
    "end_seconds",
    "modality",
]


def empty_features() -> npt.NDArray[np.float32]:
    return np.zeros((0, FEATURE_DIM), np.float32)


@dataclass
class SegmentFeatures:
    """Features of one clip segment; each stream is float32 ``(frames, 512)``, maybe 0 frames."""

    clip_id: str
    segment_index: int
    n_segments: int
    start_seconds: float
    end_seconds: float
    modality: str
    streams: dict[str, npt.NDArray[np.float32]] = field(default_factory=dict)

    def stream(self, name: str) -> npt.NDArray[np.float32]:
        return self.streams.get(name, empty_features())

    @property
    def frames(self) -> int:
        return sum(int(a.shape[0]) for a in self.streams.values())


class FeatureStore:
    """Features of one settings hash under a feature root (local path or URI)."""

    def __init__(
        self, root: str, settings_hash: str, stream_hashes: dict[str, str] | None = None
    ) -> None:
        self.root = root
        self.settings_hash = settings_hash
        self.folder = join_uri(root, settings_hash)
        self.parquet_dir = join_uri(self.folder, "parquet")
        self.tfrecord_dir = join_uri(self.folder, "tfrecords")
        self.index_dir = join_uri(self.folder, "index")
        self._stream_hashes = stream_hashes
        self._index = IndexReader(self.folder)
        self._index_ready = False  # this store has seen (or made) a generation of the index
        self._parts_written = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> FeatureStore:
        """The store the current settings read and write."""
        hashes = {s: settings.stream_hash(s) for s in STREAMS}
        return cls(settings.features_root, settings.settings_hash, hashes)

    @property
    def stream_hashes(self) -> dict[str, str]:
        """Per-stream settings hashes (from settings.json when not given)."""
        if self._stream_hashes is None:
            settings = self.read_settings()
            self._stream_hashes = {s: str(settings.get(f"{s}_hash", "")) for s in STREAMS}
        return self._stream_hashes

    # Writing ------------------------------------------------------------------------------

    def write_settings(self, feature_settings: dict[str, Any]) -> None:
        """Record which settings produced this folder (once; identical on every run)."""
        uri = join_uri(self.folder, "settings.json")
        if not storage.exists(uri):
            payload = {"settings_hash": self.settings_hash, **feature_settings}
            storage.write_bytes(uri, json.dumps(payload, indent=2, sort_keys=True).encode())

    def read_settings(self) -> dict[str, Any]:
        uri = join_uri(self.folder, "settings.json")
        if not storage.exists(uri):
            return {}
        result: dict[str, Any] = json.loads(storage.read_bytes(uri))
        return result

    def write_part(self, segments: Sequence[SegmentFeatures]) -> str:
        """Write segments as one part (TFRecord, then Parquet as the commit marker); return its
        name. The name is derived from the clip ids, so retrying the same clips overwrites rather
        than duplicates."""
        if not segments:
            raise ValueError("write_part needs at least one segment")
        for seg in segments:
            for name, array in seg.streams.items():
                if name not in STREAMS:
                    raise StoreError(f"clip {seg.clip_id}: unknown stream {name!r}")
                if array.ndim != 2 or array.shape[1] != FEATURE_DIM:
                    raise StoreError(
                        f"clip {seg.clip_id}: {name} features must be (frames, {FEATURE_DIM}), "
                        f"got {array.shape}"
                    )
                if not np.all(np.isfinite(array)):
                    raise StoreError(f"clip {seg.clip_id}: {name} features contain NaN or inf")
        ids = sorted({s.clip_id for s in segments})
        name = "part-" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
        try:
            self._ensure_index()
            tfrecord_bytes = self._write_tfrecord(
                join_uri(self.tfrecord_dir, f"{name}.tfrecord.gz"), segments
            )
            table = self._to_table(segments)
            with storage.atomic_write(join_uri(self.parquet_dir, f"{name}.parquet")) as tmp:
                pq.write_table(table, tmp, compression="zstd")
                size = tfrecord_bytes + os.path.getsize(tmp)
                write_entry(self.index_dir, name, entry_table(name, table, size))
        except Exception as exc:
            # Nothing of this part is visible: each file is renamed into place only when
            # complete, and the index trusts no entry whose Parquet file is missing.
            raise StoreError(
                f"cannot write feature part {name} of {self.folder} ({describe(exc)}); free "
                "disk space or raise the quota / file-size limit, then re-run `stpipe extract` "
                "(no half-written part is visible)"
            ) from exc
        self._parts_written += 1
        if self._parts_written % COMPACT_EVERY_PARTS == 0:
            self._compact_if_behind()
        return name

    def _ensure_index(self) -> None:
        """Give the folder its first index generation before this store writes an entry (a
        folder written before the index is migrated then, so no old part is ever hidden)."""
        if not self._index_ready:
            if self._index.read() is None:
                compact(self.folder, rescan=True)
            self._index_ready = True

    def _compact_if_behind(self) -> None:
        index = self._index.read()
        if index is not None and index.uncompacted >= COMPACT_EVERY_PARTS:
            compact(self.folder)

    def compact_index(self, *, rescan: bool = False) -> Compaction:
        """Merge the index entries of parts written since the last compaction into one file
        (see :func:`pipeline.features.index.compact`); ``rescan`` also indexes committed parts
        that have no entry (a folder written before the index)."""
        return compact(self.folder, rescan=rescan)

    def _to_table(self, segments: Sequence[SegmentFeatures]) -> pa.Table:
        now = datetime.now(UTC)
        hashes = self.stream_hashes
        columns: dict[str, Any] = {
            "clip_id": pa.array([s.clip_id for s in segments], pa.string()),
            "segment_index": pa.array([s.segment_index for s in segments], pa.int32()),
            "n_segments": pa.array([s.n_segments for s in segments], pa.int32()),
            "start_seconds": pa.array([s.start_seconds for s in segments], pa.float64()),
            "end_seconds": pa.array([s.end_seconds for s in segments], pa.float64()),
            "modality": pa.array([s.modality for s in segments], pa.string()),
            "settings_hash": pa.array([self.settings_hash] * len(segments), pa.string()),
            "video_hash": pa.array([hashes["video"]] * len(segments), pa.string()),
            "audio_hash": pa.array([hashes["audio"]] * len(segments), pa.string()),
        }
        for stream in STREAMS:
            arrays = [s.stream(stream) for s in segments]
            columns[f"{stream}_frames"] = pa.array([a.shape[0] for a in arrays], pa.int32())
            columns[stream] = numpy_to_sequences(arrays)
        columns["extracted_at"] = pa.array([now] * len(segments), pa.timestamp("us", tz="UTC"))
        return pa.Table.from_pydict(columns, schema=PARQUET_SCHEMA)

    @staticmethod
    def _write_tfrecord(uri: str, segments: Sequence[SegmentFeatures]) -> int:
        """Write the TFRecord copy; return its size in bytes."""
        from pipeline.tfenv import tf

        options = tf.io.TFRecordOptions(compression_type="GZIP")
        with storage.atomic_write(uri) as tmp:
            with tf.io.TFRecordWriter(tmp, options) as writer:
                for segment in segments:
                    writer.write(sequence_example(segment).SerializeToString())
            return os.path.getsize(tmp)

    # Reading ------------------------------------------------------------------------------

    def index(self) -> FeatureIndex:
        """The committed parts and their clips' segments (read again each call, opening only
        what changed since the last; a folder written before the index is indexed first)."""
        index = self._index.read()
        if index is None:
            if not storage.list_files(self.parquet_dir, (".parquet",)):
                return EMPTY_INDEX  # nothing written yet: a reader writes nothing
            log.info("indexing feature folder %s (written before the index)", self.folder)
            compact(self.folder, rescan=True)
            index = self._index.read()
        self._index_ready = True
        return index if index is not None else EMPTY_INDEX

    def parquet_uri(self, part: str) -> str:
        return join_uri(self.parquet_dir, f"{part}.parquet")

    def tfrecord_uri(self, part: str) -> str:
        return join_uri(self.tfrecord_dir, f"{part}.tfrecord.gz")

    def parquet_parts(self) -> list[str]:
        """Committed parts' Parquet files (sorted)."""
        return [self.parquet_uri(p) for p in self.index().parts]

    def tfrecord_parts(self, clip_ids: Iterable[str] | None = None) -> list[str]:
        """TFRecord files of the committed parts (sorted); with ``clip_ids``, only of the parts
        holding one of them."""
        index = self.index()
        parts = index.parts if clip_ids is None else index.parts_holding(clip_ids)
        return [self.tfrecord_uri(p) for p in parts]

    def clips_by_part(self) -> dict[str, frozenset[str]]:
        """Per committed Parquet part, the ids of the clips it holds (from the index)."""
        return {self.parquet_uri(p): held for p, held in self.index().clips_by_part().items()}

    def clip_ids(self) -> set[str]:
        """Ids of every clip with features in this folder (from the index)."""
        return self.index().clip_ids()

    def read_segments(
        self, clip_ids: Iterable[str] | None = None, streams: Sequence[str] = STREAMS
    ) -> dict[str, list[SegmentFeatures]]:
        """Segments (in order) of ``clip_ids`` (all clips when None), from the Parquet copy.
        Only the parts that hold one of ``clip_ids`` are read."""
        index = self.index()
        wanted = set(clip_ids) if clip_ids is not None else None
        part_of = index.part_of
        parts = index.parts if wanted is None else index.parts_holding(wanted)
        found: dict[str, list[SegmentFeatures]] = {}
        for part in parts:
            table = read_part(self.parquet_uri(part), [*_META_COLUMNS, *streams])
            ids = table.column("clip_id").to_pylist()
            keep = [
                i
                for i, c in enumerate(ids)
                if part_of.get(c) == part and (wanted is None or c in wanted)
            ]
            table = table.take(pa.array(keep, pa.int64()))
            meta = table.select(_META_COLUMNS).to_pylist()
            arrays = {s: sequences_to_numpy(table.column(s)) for s in streams}
            for i, row in enumerate(meta):
                found.setdefault(row["clip_id"], []).append(
                    SegmentFeatures(**row, streams={s: arrays[s][i] for s in streams})
                )
        return {c: sorted(rows, key=lambda r: r.segment_index) for c, rows in found.items()}

    def segment_frames(
        self, clip_ids: Iterable[str] | None = None
    ) -> dict[str, list[dict[str, int]]]:
        """Per clip (of ``clip_ids``; every clip when None), per segment (in order): frames of
        each stream, e.g. ``{"video": 16, "audio": 0}``. From the index; no part is opened."""
        return self.index().segment_frames(clip_ids)

    def iter_stream_frames(
        self, clip_ids: Iterable[str], stream: str
    ) -> Iterator[npt.NDArray[np.float32]]:
        """Frame matrices ``(frames, 512)`` of one stream of the given clips, part by part
        (only the parts holding them are opened)."""
        index = self.index()
        wanted = set(clip_ids)
        part_of = index.part_of
        for part in index.parts_holding(wanted):
            table = read_part(self.parquet_uri(part), ["clip_id", stream])
            mask = [
                c in wanted and part_of.get(c) == part for c in table.column("clip_id").to_pylist()
            ]
            chosen = sequences_to_numpy(table.filter(pa.array(mask, pa.bool_())).column(stream))
            if chosen:
                yield np.concatenate(chosen)

    def verify(self) -> dict[str, Any]:
        """Check that the index, the Parquet and the TFRecord copies of every part agree.

        Returns ``{"parts", "segments", "problems"}``; ``problems`` lists every difference
        (a part missing from the index, index rows that differ from the part's, a missing twin,
        a segment in one copy only, or features that differ).
        """
        from pipeline.tfenv import enable_object_store_filesystems, tf

        if storage.is_remote(self.folder):
            enable_object_store_filesystems()
        index = self.index()
        problems = [
            f"{name}: committed but not in the index; run `stpipe features compact --rescan`"
            for name in unindexed_parts(self.folder, index)
        ]
        segments = 0
        for name in index.parts:
            twin = self.tfrecord_uri(name)
            if not storage.exists(self.parquet_uri(name)):
                problems.append(f"{name}: in the index but its Parquet file is missing")
                continue
            if not storage.exists(twin):
                problems.append(f"{name}: TFRecord twin missing")
                continue
            table = read_part(self.parquet_uri(name), [*_INDEXED_COLUMNS, *STREAMS])
            problems.extend(_index_problems(name, index, table))
            keys = list(
                zip(
                    table.column("clip_id").to_pylist(),
                    table.column("segment_index").to_pylist(),
                    strict=True,
                )
            )
            arrays = {s: sequences_to_numpy(table.column(s)) for s in STREAMS}
            parquet_rows = {key: {s: arrays[s][i] for s in STREAMS} for i, key in enumerate(keys)}
            if len(parquet_rows) != len(keys):
                problems.append(f"{name}: a segment appears twice in the Parquet copy")
            seen = set()
            for record in tf.data.TFRecordDataset([twin], compression_type="GZIP"):
                parsed = parse_sequence_example(record)
                key = (parsed["clip_id"].numpy().decode(), int(parsed["segment_index"]))
                seen.add(key)
                if key not in parquet_rows:
                    problems.append(f"{name}: {key} only in the TFRecord copy")
                    continue
                for stream in STREAMS:
                    if not np.array_equal(parsed[stream].numpy(), parquet_rows[key][stream]):
                        problems.append(f"{name}: {key} {stream} features differ")
            problems.extend(
                f"{name}: {key} only in the Parquet copy" for key in parquet_rows.keys() - seen
            )
            segments += len(parquet_rows)
        return {"parts": len(index.parts), "segments": segments, "problems": problems}

    def stats(self) -> dict[str, Any]:
        """Clips, segments, frames per stream and bytes of the committed parts (from the index;
        no part is opened)."""
        totals = self.index().totals()
        return {
            "settings_hash": self.settings_hash,
            "clips": totals["clips"],
            "segments": totals["segments"],
            "frames": sum(totals[f"{s}_frames"] for s in STREAMS),
            "video_frames": totals["video_frames"],
            "audio_frames": totals["audio_frames"],
            "bytes": totals["bytes"],
        }


def stores_with_stream(
    root: str, stream: str, stream_hash: str, exclude: str = ""
) -> list[FeatureStore]:
    """Feature folders under ``root`` whose ``stream`` features were made with ``stream_hash``
    (candidates to copy from instead of recomputing)."""
    found = []
    for settings_hash in list_settings_folders(root):
        if settings_hash == exclude:
            continue
        store = FeatureStore(root, settings_hash)
        if store.stream_hashes.get(stream) == stream_hash:
            found.append(store)
    return found


def sequence_example(segment: SegmentFeatures) -> Any:
    """A ``tf.train.SequenceExample`` holding one clip segment's features."""
    from pipeline.tfenv import tf

    def floats(value: float) -> Any:
        return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))

    def ints(value: int) -> Any:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    def text(value: str) -> Any:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))

    feature_lists = {
        stream: tf.train.FeatureList(
            feature=[
                tf.train.Feature(float_list=tf.train.FloatList(value=row))
                for row in segment.stream(stream).astype(np.float32)
            ]
        )
        for stream in STREAMS
    }
    return tf.train.SequenceExample(
        context=tf.train.Features(
            feature={
                "clip_id": text(segment.clip_id),
                "modality": text(segment.modality),
                "segment_index": ints(segment.segment_index),
                "n_segments": ints(segment.n_segments),
                "start_seconds": floats(segment.start_seconds),
                "end_seconds": floats(segment.end_seconds),
            }
        ),
        feature_lists=tf.train.FeatureLists(feature_list=feature_lists),
    )


def parse_sequence_example(serialized: Any) -> dict[str, Any]:
    """Parse a serialized SequenceExample into tensors: ``clip_id``, ``segment_index`` and one
    ``(frames, 512)`` float32 tensor per stream."""
    from pipeline.tfenv import tf

    context, sequences = tf.io.parse_single_sequence_example(
        serialized,
        context_features={
            "clip_id": tf.io.FixedLenFeature([], tf.string),
            "segment_index": tf.io.FixedLenFeature([], tf.int64),
        },
        sequence_features={
            stream: tf.io.FixedLenSequenceFeature([FEATURE_DIM], tf.float32, allow_missing=True)
            for stream in STREAMS
        },
    )
    return {**context, **sequences}


def numpy_to_sequences(arrays: Sequence[npt.NDArray[np.float32]]) -> pa.Array:
    """``(frames_i, 512)`` arrays -> list<fixed_size_list<float32, 512>> (one list per array)."""
    lengths = np.array([a.shape[0] for a in arrays], dtype=np.int32)
    flat = (
        np.concatenate([a.astype(np.float32).reshape(-1) for a in arrays])
        if len(arrays)
        else np.zeros(0, np.float32)
    )
    frames = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), FEATURE_DIM)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), frames)


def sequences_to_numpy(column: pa.ChunkedArray | pa.Array) -> list[npt.NDArray[np.float32]]:
    """list<fixed_size_list<float32, 512>> -> one ``(frames, 512)`` array per row (zero-copy)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    out: list[npt.NDArray[np.float32]] = []
    for chunk in chunks:
        offsets = chunk.offsets.to_numpy()
        values = chunk.values  # FixedSizeListArray of all frames in this chunk
        flat = values.values.to_numpy(zero_copy_only=False).reshape(-1, FEATURE_DIM)
        base = values.offset  # `.values` ignores the child's own slice offset
        for i in range(len(chunk)):
            out.append(flat[offsets[i] + base : offsets[i + 1] + base])
    return out


_INDEXED_COLUMNS = ["clip_id", "segment_index", "n_segments", "modality", *FRAME_COLUMNS]


def _index_problems(name: str, index: FeatureIndex, table: pa.Table) -> list[str]:
    """Differences between a part's rows and what the index says of them."""
    listed = index.table.filter(pc.equal(index.table.column("part"), name))
    key = [("clip_id", "ascending"), ("segment_index", "ascending")]
    ours = listed.select(_INDEXED_COLUMNS).sort_by(key).to_pylist()
    theirs = table.select(_INDEXED_COLUMNS).sort_by(key).to_pylist()
    if ours == theirs:
        return []
    return [
        f"{name}: the index says {len(ours)} segments, the part holds {len(theirs)} (or their "
        "frames differ); run `stpipe features compact --rescan`"
    ]


def list_settings_folders(root: str) -> list[str]:
    """Settings hashes that have a feature folder with at least one committed part."""
    prefix = root.rstrip("/") + "/"
    hashes = {
        p[len(prefix) :].split("/", 1)[0]
        for p in storage.list_files(root, (".parquet",))
        if p.startswith(prefix)
    }
    return sorted(hashes)
