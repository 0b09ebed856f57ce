"""The feature store: VGG-16 features per clip segment, keyed by (clip id, settings hash).

Layout under ``DATA_DIR/features/<settings_hash>/``::

    settings.json                       the settings this folder holds (both streams' hashes)
    parquet/part-<id>.parquet           one row per clip segment (analysts, scoring, checks)
    tfrecords/part-<id>.tfrecord.gz     the same rows as SequenceExamples (training input)

A row holds both *streams* of a segment: ``video`` (sampled frames) and ``audio`` (spectrogram
windows; for a video, its audio track). A stream a clip does not have is an empty list. Each
stream has its own settings hash (``video_hash``, ``audio_hash``): when only one stream's
settings change, the other stream's features are copied from the folder that has them instead of
being computed again.

A part is written TFRecord first, Parquet last, each atomically; the Parquet file is the commit
marker. Readers only trust TFRecord parts that have their Parquet twin, so a crash between the
two writes leaves an ignored orphan rather than a half-visible part. All rows of a clip are in
one part.

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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.config import STREAMS, Settings, join_uri
from pipeline.errors import StoreError, describe
from pipeline.features.identity import FEATURE_DIM

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
        self._stream_hashes = stream_hashes
        # Committed parts never change, so which clips a part holds is read once per store.
        self._part_clips: dict[str, frozenset[str]] = {}

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
            self._write_tfrecord(join_uri(self.tfrecord_dir, f"{name}.tfrecord.gz"), segments)
            with storage.atomic_write(join_uri(self.parquet_dir, f"{name}.parquet")) as tmp:
                pq.write_table(self._to_table(segments), tmp, compression="zstd")
        except Exception as exc:
            # Nothing of this part is visible: each file is renamed into place only when
            # complete, and a TFRecord without its Parquet twin is ignored.
            raise StoreError(
                f"cannot write feature part {name} of {self.folder} ({describe(exc)}); free "
                "disk space or raise the quota / file-size limit, then re-run `stpipe extract` "
                "(no half-written part is visible)"
            ) from exc
        return name

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
    def _write_tfrecord(uri: str, segments: Sequence[SegmentFeatures]) -> None:
        from pipeline.tfenv import tf

        options = tf.io.TFRecordOptions(compression_type="GZIP")
        with storage.atomic_write(uri) as tmp, tf.io.TFRecordWriter(tmp, options) as writer:
            for segment in segments:
                writer.write(sequence_example(segment).SerializeToString())

    # Reading ------------------------------------------------------------------------------

    def parquet_parts(self) -> list[str]:
        return storage.list_files(self.parquet_dir, (".parquet",))

    def tfrecord_parts(self) -> list[str]:
        """TFRecord parts whose Parquet twin exists (committed parts only)."""
        committed = {_part_name(p) for p in self.parquet_parts()}
        parts = storage.list_files(self.tfrecord_dir, (".tfrecord.gz",))
        orphans = [p for p in parts if _part_name(p) not in committed]
        if orphans:
            log.warning("ignoring %d uncommitted TFRecord part(s): %s", len(orphans), orphans[:3])
        return [p for p in parts if _part_name(p) in committed]

    def clips_by_part(self) -> dict[str, frozenset[str]]:
        """Per committed Parquet part, the ids of the clips it holds (one column per part, read
        once per store: committed parts are never rewritten)."""
        parts = self.parquet_parts()
        for part in parts:
            if part not in self._part_clips:
                column = _read_parquet(part, ["clip_id"]).column("clip_id")
                self._part_clips[part] = frozenset(column.to_pylist())
        return {part: self._part_clips[part] for part in parts}

    def clip_ids(self) -> set[str]:
        """Ids of every clip with features in this folder (reads one column)."""
        return set().union(*self.clips_by_part().values())

    def read_segments(
        self, clip_ids: Iterable[str] | None = None, streams: Sequence[str] = STREAMS
    ) -> dict[str, list[SegmentFeatures]]:
        """Segments (in order) of ``clip_ids`` (all clips when None), from the Parquet copy.
        Only the parts that hold one of ``clip_ids`` are read."""
        wanted = set(clip_ids) if clip_ids is not None else None
        found: dict[str, list[SegmentFeatures]] = {}
        for part, held in self.clips_by_part().items():
            if wanted is not None and held.isdisjoint(wanted):
                continue
            table = _read_parquet(part, [*_META_COLUMNS, *streams])
            ids = table.column("clip_id").to_pylist()
            keep = [i for i, c in enumerate(ids) if wanted is None or c in wanted]
            table = table.take(pa.array(keep))
            meta = table.select(_META_COLUMNS).to_pylist()
            arrays = {s: sequences_to_numpy(table.column(s)) for s in streams}
            part_rows: dict[str, list[SegmentFeatures]] = {}
            for i, row in enumerate(meta):
                part_rows.setdefault(row["clip_id"], []).append(
                    SegmentFeatures(**row, streams={s: arrays[s][i] for s in streams})
                )
            for clip_id, rows in part_rows.items():
                found.setdefault(clip_id, sorted(rows, key=lambda r: r.segment_index))
        return found

    def segment_frames(self) -> dict[str, list[dict[str, int]]]:
        """Per clip, per segment (in order): frames of each stream, e.g.
        ``{"video": 16, "audio": 0}``. Reads only the small columns."""
        index: dict[str, list[tuple[int, dict[str, int]]]] = {}
        for part in self.parquet_parts():
            table = _read_parquet(
                part, ["clip_id", "segment_index", "video_frames", "audio_frames"]
            )
            for row in table.to_pylist():
                frames = {s: int(row[f"{s}_frames"]) for s in STREAMS}
                index.setdefault(row["clip_id"], []).append((row["segment_index"], frames))
        return {c: [f for _, f in sorted(rows, key=lambda r: r[0])] for c, rows in index.items()}

    def iter_stream_frames(
        self, clip_ids: Iterable[str], stream: str
    ) -> Iterator[npt.NDArray[np.float32]]:
        """Frame matrices ``(frames, 512)`` of one stream of the given clips, part by part."""
        wanted = set(clip_ids)
        for part in self.parquet_parts():
            table = _read_parquet(part, ["clip_id", stream])
            mask = [c in wanted for c in table.column("clip_id").to_pylist()]
            if any(mask):
                chosen = sequences_to_numpy(table.filter(pa.array(mask)).column(stream))
                if chosen:
                    yield np.concatenate(chosen)

    def verify(self) -> dict[str, Any]:
        """Check that the Parquet and TFRecord copies of every part hold the same numbers.

        Returns ``{"parts", "segments", "problems"}``; ``problems`` lists every difference
        (a missing twin, a segment in one copy only, or features that differ).
        """
        from pipeline.tfenv import enable_object_store_filesystems, tf

        if storage.is_remote(self.folder):
            enable_object_store_filesystems()
        problems: list[str] = []
        segments = 0
        for parquet in self.parquet_parts():
            name = _part_name(parquet)
            twin = join_uri(self.tfrecord_dir, f"{name}.tfrecord.gz")
            if not storage.exists(twin):
                problems.append(f"{name}: TFRecord twin missing")
                continue
            table = _read_parquet(parquet, ["clip_id", "segment_index", *STREAMS])
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
        return {"parts": len(self.parquet_parts()), "segments": segments, "problems": problems}

    def stats(self) -> dict[str, Any]:
        """Clips, segments, frames per stream and bytes on disk in this folder."""
        clips: set[str] = set()
        segments = 0
        frames = dict.fromkeys(STREAMS, 0)
        for part in self.parquet_parts():
            table = _read_parquet(part, ["clip_id", "video_frames", "audio_frames"])
            clips.update(table.column("clip_id").to_pylist())
            segments += table.num_rows
            for stream in STREAMS:
                frames[stream] += int(table.column(f"{stream}_frames").to_numpy().sum())
        size = sum(storage.file_stat(p)[0] for p in storage.list_files(self.folder))
        return {
            "settings_hash": self.settings_hash,
            "clips": len(clips),
            "segments": segments,
            "frames": sum(frames.values()),
            "video_frames": frames["video"],
            "audio_frames": frames["audio"],
            "bytes": size,
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


def _read_parquet(uri: str, columns: list[str]) -> pa.Table:
    try:
        if storage.is_remote(uri):
            with storage.open_read(uri) as handle:
                return pq.read_table(handle, columns=columns)
        return pq.read_table(uri, columns=columns)
    except (OSError, pa.ArrowInvalid) as exc:
        raise StoreError(f"cannot read feature part {uri}: {exc}") from exc


def _part_name(uri: str) -> str:
    return uri.rsplit("/", 1)[-1].split(".", 1)[0]


def list_settings_folders(root: str) -> list[str]:
    """Settings hashes that have a feature folder with at least one committed part."""
    prefix = root.rstrip("/") + "/"
    hashes = {
        p[len(prefix) :].split("/", 1)[0]
        for p in storage.list_files(root, (".parquet",))
        if p.startswith(prefix)
    }
    return sorted(hashes)
