"""The feature store: VGG-16 features per clip, keyed by (clip id, settings hash).

Layout under ``DATA_DIR/features/<settings_hash>/``::

    settings.json                       the feature settings this folder holds
    parquet/part-<id>.parquet           one row per clip (analysts, scoring, checks)
    tfrecords/part-<id>.tfrecord.gz     the same clips as SequenceExamples (training input)

A part is written TFRecord first, Parquet last, each atomically; the Parquet file is the commit
marker. Readers only trust TFRecord parts that have their Parquet twin, so a crash between the
two writes leaves an ignored orphan rather than a half-visible part.

Parquet schema: ``clip_id`` string, ``settings_hash`` string, ``modality`` string,
``n_frames`` int32, ``features`` list<fixed_size_list<float32, 512>> (frames x 512),
``extracted_at`` timestamp (UTC).

TFRecord ``SequenceExample``: context ``clip_id`` (bytes), ``modality`` (bytes), ``n_frames``
(int64); feature list ``features``: one 512-float ``FloatList`` per frame.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.config import join_uri
from pipeline.errors import StoreError

log = logging.getLogger(__name__)

FEATURE_DIM = 512
PARQUET_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("settings_hash", pa.string()),
        ("modality", pa.string()),
        ("n_frames", pa.int32()),
        ("features", pa.list_(pa.list_(pa.float32(), FEATURE_DIM))),
        ("extracted_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class ClipFeatures:
    """One clip's feature sequence: ``features`` is float32 ``(n_frames, 512)``."""

    clip_id: str
    modality: str
    features: npt.NDArray[np.float32]


class FeatureStore:
    """Features of one settings hash under a feature root (local path or URI)."""

    def __init__(self, root: str, settings_hash: str) -> None:
        self.root = root
        self.settings_hash = settings_hash
        self.folder = join_uri(root, settings_hash)
        self.parquet_dir = join_uri(self.folder, "parquet")
        self.tfrecord_dir = join_uri(self.folder, "tfrecords")

    # Writing ------------------------------------------------------------------------------

    def write_settings(self, feature_settings: dict[str, Any]) -> None:
        """Record which settings produced this folder (once; identical on every run)."""
        uri = join_uri(self.folder, "settings.json")
        if not storage.exists(uri):
            payload = {"settings_hash": self.settings_hash, **feature_settings}
            storage.write_bytes(uri, json.dumps(payload, indent=2, sort_keys=True).encode())

    def write_part(self, clips: Sequence[ClipFeatures]) -> str:
        """Write clips as one part (TFRecord, then Parquet as the commit marker); return its name.

        The part name is derived from the clip ids, so retrying the same batch overwrites
        rather than duplicates.
        """
        if not clips:
            raise ValueError("write_part needs at least one clip")
        for clip in clips:
            if clip.features.ndim != 2 or clip.features.shape[1] != FEATURE_DIM:
                raise StoreError(
                    f"clip {clip.clip_id}: features must be (frames, {FEATURE_DIM}), "
                    f"got {clip.features.shape}"
                )
            if not np.all(np.isfinite(clip.features)):
                raise StoreError(f"clip {clip.clip_id}: features contain NaN or inf")
        ids = sorted(c.clip_id for c in clips)
        name = "part-" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
        self._write_tfrecord(join_uri(self.tfrecord_dir, f"{name}.tfrecord.gz"), clips)
        with storage.atomic_write(join_uri(self.parquet_dir, f"{name}.parquet")) as tmp:
            pq.write_table(self._to_table(clips), tmp, compression="zstd")
        return name

    def _to_table(self, clips: Sequence[ClipFeatures]) -> pa.Table:
        now = datetime.now(UTC)
        lengths = np.array([c.features.shape[0] for c in clips], dtype=np.int32)
        flat = np.concatenate([c.features.astype(np.float32).reshape(-1) for c in clips])
        frames = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), FEATURE_DIM)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        sequences = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), frames)
        return pa.Table.from_arrays(
            [
                pa.array([c.clip_id for c in clips], pa.string()),
                pa.array([self.settings_hash] * len(clips), pa.string()),
                pa.array([c.modality for c in clips], pa.string()),
                pa.array(lengths, pa.int32()),
                sequences,
                pa.array([now] * len(clips), pa.timestamp("us", tz="UTC")),
            ],
            schema=PARQUET_SCHEMA,
        )

    @staticmethod
    def _write_tfrecord(uri: str, clips: Sequence[ClipFeatures]) -> None:
        from pipeline.tfenv import tf

        options = tf.io.TFRecordOptions(compression_type="GZIP")
        with storage.atomic_write(uri) as tmp, tf.io.TFRecordWriter(tmp, options) as writer:
            for clip in clips:
                writer.write(sequence_example(clip).SerializeToString())

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

    def clip_ids(self) -> set[str]:
        """Ids of every clip with features for this settings hash (reads one column)."""
        ids: set[str] = set()
        for part in self.parquet_parts():
            ids.update(_read_parquet(part, ["clip_id"]).column("clip_id").to_pylist())
        return ids

    def read_features(self, clip_ids: Iterable[str] | None = None) -> dict[str, ClipFeatures]:
        """Feature sequences of ``clip_ids`` (all clips when None) from the Parquet copy."""
        wanted = set(clip_ids) if clip_ids is not None else None
        found: dict[str, ClipFeatures] = {}
        for part in self.parquet_parts():
            table = _read_parquet(part, ["clip_id", "modality", "n_frames", "features"])
            ids = table.column("clip_id").to_pylist()
            keep = [
                i for i, c in enumerate(ids) if (wanted is None or c in wanted) and c not in found
            ]
            if not keep:
                continue
            table = table.take(pa.array(keep))
            for clip_id, modality, array in zip(
                table.column("clip_id").to_pylist(),
                table.column("modality").to_pylist(),
                sequences_to_numpy(table.column("features")),
                strict=True,
            ):
                found[clip_id] = ClipFeatures(clip_id, modality, array)
        return found

    def iter_feature_batches(self, clip_ids: Iterable[str]) -> Iterable[npt.NDArray[np.float32]]:
        """Frame matrices ``(frames, 512)`` of the given clips, part by part (for statistics)."""
        wanted = set(clip_ids)
        for part in self.parquet_parts():
            table = _read_parquet(part, ["clip_id", "features"])
            mask = [c in wanted for c in table.column("clip_id").to_pylist()]
            if any(mask):
                chosen = table.filter(pa.array(mask)).column("features")
                yield np.concatenate(sequences_to_numpy(chosen))

    def stats(self) -> dict[str, Any]:
        """Clips, frames and bytes on disk in this folder."""
        clips = frames = 0
        for part in self.parquet_parts():
            lengths = _read_parquet(part, ["n_frames"]).column("n_frames").to_numpy()
            clips += len(lengths)
            frames += int(lengths.sum())
        size = sum(storage.file_stat(p)[0] for p in storage.list_files(self.folder))
        return {
            "settings_hash": self.settings_hash,
            "clips": clips,
            "frames": frames,
            "bytes": size,
        }


def sequence_example(clip: ClipFeatures) -> Any:
    """A ``tf.train.SequenceExample`` holding one clip's features."""
    from pipeline.tfenv import tf

    frames = [
        tf.train.Feature(float_list=tf.train.FloatList(value=row))
        for row in clip.features.astype(np.float32)
    ]
    return tf.train.SequenceExample(
        context=tf.train.Features(
            feature={
                "clip_id": _bytes_feature(clip.clip_id),
                "modality": _bytes_feature(clip.modality),
                "n_frames": tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[clip.features.shape[0]])
                ),
            }
        ),
        feature_lists=tf.train.FeatureLists(
            feature_list={"features": tf.train.FeatureList(feature=frames)}
        ),
    )


def _bytes_feature(text: str) -> Any:
    from pipeline.tfenv import tf

    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode()]))


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
    return Path(uri.rsplit("/", 1)[-1]).name.split(".", 1)[0]


def list_settings_folders(root: str) -> list[str]:
    """Settings hashes that have a feature folder under ``root``."""
    hashes = {
        p[len(root.rstrip("/")) + 1 :].split("/", 1)[0]
        for p in storage.list_files(root, (".parquet",))
    }
    return sorted(hashes)
