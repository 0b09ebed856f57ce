"""The index of a feature folder: which part holds each clip, and the small facts readers need.

Layout under ``features/<settings_hash>/index/``::

    parts/part-<id>.parquet           one entry per part, written with the part
    compacted-<generation>.parquet    the entries of every part committed when it was written

Every file has :data:`INDEX_SCHEMA`: one row per clip segment (``part``, ``clip_id``,
``segment_index``, ``n_segments``, ``modality``, ``video_frames``, ``audio_frames``,
``part_bytes``: the bytes of the part's Parquet and TFRecord files, the same on each of its rows).

**Writing a part** (:meth:`FeatureStore.write_part`): TFRecord, then the index entry, then the
Parquet file, each renamed into place only when complete. The Parquet file stays the commit
marker: a reader trusts an entry only once its part's Parquet file exists, so an entry a killed
writer left behind is ignored, and a part is never committed without its entry.

**Compaction** (:func:`compact`) merges the newest generation and the committed entries it does
not cover into the next generation. Each generation's file is created exclusively (one
compactor wins a number; the others merge again onto the winner's file), so once visible it
never changes; entries are never deleted and generations only grow, so shards that write and
compact at the same time, on any host, can at worst redo each other's work. A reader lists
``index/`` (names only), reads the newest generation and only the entries it does not cover:
at a million clips, one file and a few small ones instead of a column of every part. The
newest :data:`KEEP_GENERATIONS` generations are kept, so a reader that listed an older one can
still open it.

**Migration**: a folder written before the index has Parquet parts and no generation; the first
reader or writer builds generation 1 from the parts (:func:`compact` with ``rescan``). A writer
does that before its first entry, so a folder never has entries that hide older parts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.config import STREAMS, join_uri
from pipeline.errors import StoreError
from pipeline.features.identity import FEATURE_DIM

log = logging.getLogger(__name__)

INDEX_SCHEMA = pa.schema(
    [
        ("part", pa.string()),
        ("clip_id", pa.string()),
        ("segment_index", pa.int32()),
        ("n_segments", pa.int32()),
        ("modality", pa.string()),
        ("video_frames", pa.int32()),
        ("audio_frames", pa.int32()),
        ("part_bytes", pa.int64()),
    ]
)
FRAME_COLUMNS = [f"{s}_frames" for s in STREAMS]
#: Columns of a Parquet part that an index entry copies.
PART_COLUMNS = ["clip_id", "segment_index", "n_segments", "modality", *FRAME_COLUMNS]
#: Generations of the compacted index kept (readers that listed an older one can still open it).
KEEP_GENERATIONS = 3
_GENERATION = re.compile(r"compacted-(\d+)\.parquet$")


def entry_table(part: str, parts_table: pa.Table, part_bytes: int) -> pa.Table:
    """The index entry of ``part`` from its Parquet rows (at least the :data:`PART_COLUMNS`)."""
    rows = parts_table.num_rows
    columns = {name: parts_table.column(name) for name in PART_COLUMNS}
    return pa.Table.from_pydict(
        {
            "part": pa.array([part] * rows, pa.string()),
            **columns,
            "part_bytes": pa.array([part_bytes] * rows, pa.int64()),
        },
        schema=INDEX_SCHEMA,
    )


def write_entry(index_dir: str, part: str, table: pa.Table) -> None:
    """Write the index entry of ``part`` (atomically; a retry of the same part overwrites it)."""
    with storage.atomic_write(join_uri(index_dir, "parts", f"{part}.parquet")) as tmp:
        pq.write_table(table, tmp, compression="zstd")


@dataclass(frozen=True)
class FeatureIndex:
    """One row per committed clip segment (:data:`INDEX_SCHEMA`), and views of it.

    A clip is in one part; should two committed parts hold it (which extraction's claims
    prevent), the part first in name order is the one every view uses, as readers always did.
    """

    table: pa.Table
    generation: int = 0  # of the compacted file read (0: none)
    uncompacted: int = 0  # committed entries read besides it

    @cached_property
    def parts(self) -> list[str]:
        """Names of the committed parts, sorted."""
        return sorted(pc.unique(self.table.column("part")).to_pylist())

    @cached_property
    def part_of(self) -> dict[str, str]:
        """Clip id -> the part holding it."""
        found: dict[str, str] = {}
        order = pc.sort_indices(self.table, [("part", "ascending")])
        pairs = self.table.select(["clip_id", "part"]).take(order)
        for clip, part in zip(
            pairs.column("clip_id").to_pylist(), pairs.column("part").to_pylist(), strict=True
        ):
            found.setdefault(clip, part)
        return found

    def clip_ids(self) -> set[str]:
        return set(self.part_of)

    def clips_by_part(self) -> dict[str, frozenset[str]]:
        grouped: dict[str, set[str]] = {}
        for clip, part in self.part_of.items():
            grouped.setdefault(part, set()).add(clip)
        return {part: frozenset(grouped[part]) for part in sorted(grouped)}

    def parts_holding(self, clip_ids: Iterable[str]) -> list[str]:
        """The parts (sorted) that hold any of ``clip_ids``."""
        part_of = self.part_of
        return sorted({part_of[c] for c in clip_ids if c in part_of})

    def rows(self, clip_ids: Iterable[str] | None = None) -> pa.Table:
        """The index rows of ``clip_ids`` (every clip when None), each from the clip's part,
        sorted by (clip id, segment index)."""
        table = self.table
        if clip_ids is not None:
            wanted = pa.array(sorted(set(clip_ids)), pa.string())
            table = table.filter(pc.is_in(table.column("clip_id"), value_set=wanted))
        if self._has_duplicates:
            part_of = self.part_of
            keep = [
                part_of.get(c) == p
                for c, p in zip(
                    table.column("clip_id").to_pylist(),
                    table.column("part").to_pylist(),
                    strict=True,
                )
            ]
            table = table.filter(pa.array(keep, pa.bool_()))
        return table.sort_by([("clip_id", "ascending"), ("segment_index", "ascending")])

    @cached_property
    def _has_duplicates(self) -> bool:
        pairs = self.table.group_by(["clip_id", "part"]).aggregate([]).num_rows
        return bool(pairs != len(self.part_of))

    def segment_frames(
        self, clip_ids: Iterable[str] | None = None
    ) -> dict[str, list[dict[str, int]]]:
        """Per clip, per segment (in order): frames of each stream, e.g. ``{"video": 16,
        "audio": 0}``."""
        rows = self.rows(clip_ids)
        clips = rows.column("clip_id").to_pylist()
        frames = {s: rows.column(f"{s}_frames").to_numpy() for s in STREAMS}
        found: dict[str, list[dict[str, int]]] = {}
        for i, clip in enumerate(clips):
            found.setdefault(clip, []).append({s: int(frames[s][i]) for s in STREAMS})
        return found

    def totals(self) -> dict[str, int]:
        """Clips, segments, frames per stream and bytes of the committed parts."""
        rows = self.rows()
        per_part = self.table.group_by("part").aggregate([("part_bytes", "max")])
        return {
            "clips": len(self.part_of),
            "segments": rows.num_rows,
            **{
                f"{s}_frames": int(pc.sum(rows.column(f"{s}_frames")).as_py() or 0) for s in STREAMS
            },
            "bytes": int(pc.sum(per_part.column("part_bytes_max")).as_py() or 0),
        }


EMPTY_INDEX = FeatureIndex(INDEX_SCHEMA.empty_table())


@dataclass
class IndexReader:
    """Reads a folder's index again and again, opening each file once (committed entries and
    generations never change once written)."""

    folder: str
    _generation: tuple[str, pa.Table] | None = None
    _entries: dict[str, pa.Table] = field(default_factory=dict)
    _built: tuple[object, FeatureIndex] | None = None

    @property
    def index_dir(self) -> str:
        return join_uri(self.folder, "index")

    def read(self) -> FeatureIndex | None:
        """The folder's index, or None if it has no generation yet (never written, or written
        before the index: see :func:`compact`)."""
        for attempt in range(3):
            try:
                return self._read()
            except FileNotFoundError:
                # A compactor removed the generation just listed; list again.
                if attempt == 2:
                    raise
        return None  # unreachable

    def _read(self) -> FeatureIndex | None:
        generations, entries = _list_index(self.index_dir)
        if not generations:
            return None
        generation, newest = generations[-1]
        if self._generation is None or self._generation[0] != newest:
            self._generation = (newest, _read_index_file(newest))
        compacted = self._generation[1]
        covered = set(pc.unique(compacted.column("part")).to_pylist())
        committed = []
        for part, uri in sorted(entries.items()):
            if part in covered:
                continue
            if part not in self._entries:
                if not storage.exists(_parquet_of(self.folder, part)):
                    continue  # not committed (yet, or its writer was killed): not visible
                self._entries[part] = _read_index_file(uri)
            committed.append(part)
        key = (newest, tuple(committed))
        if self._built is None or self._built[0] != key:
            table = pa.concat_tables([compacted, *(self._entries[p] for p in committed)])
            self._built = (key, FeatureIndex(table, generation, len(committed)))
        return self._built[1]


@dataclass(frozen=True)
class Compaction:
    """What :func:`compact` did."""

    generation: int  # the newest generation after compaction
    parts: int  # parts it covers (0: it lost the race every time and left the work to others)
    merged: int  # entries merged into it this time (0: nothing to do, nothing written)


def compact(folder: str, *, rescan: bool = False) -> Compaction:
    """Merge the committed entries the newest generation lacks into a new generation.

    Safe to run at any time, from several processes at once, and again (a second run with no
    new entries writes nothing). With ``rescan``, or when the folder has no generation (a folder
    written before the index), the committed Parquet parts that have no entry are read too (one
    pass over their small columns): that is the migration.

    Each generation is created exclusively (:func:`storage.create_exclusive`): of compactors
    racing for the same number one wins, and the others merge again onto the winner's file, so a
    generation's file never changes once a reader can see it.
    """
    index_dir = join_uri(folder, "index")
    for _ in range(_COMPACT_ATTEMPTS):
        generations, entries = _list_index(index_dir)
        try:
            merged, number, covered, added = _merge(folder, generations, entries, rescan)
        except FileNotFoundError:
            continue  # the newest generation was removed after listing: list again
        if merged is None:
            return Compaction(number, covered, 0)
        name = join_uri(index_dir, f"compacted-{number:010d}.parquet")
        if not storage.create_exclusive(name, _parquet_bytes(merged)):
            log.info("feature index of %s: generation %d was written by another", folder, number)
            continue
        for _, old in generations[: max(0, len(generations) + 1 - KEEP_GENERATIONS)]:
            storage.remove(old)
        log.info("feature index of %s: generation %d, %d parts", folder, number, covered)
        return Compaction(number, covered, added)
    # Others kept compacting first; their generations are as good, and entries stay readable.
    newest = _list_index(index_dir)[0]
    log.warning("feature index of %s: left compaction to its concurrent compactors", folder)
    return Compaction(newest[-1][0] if newest else 0, 0, 0)


#: Times :func:`compact` merges again after losing the race for a generation.
_COMPACT_ATTEMPTS = 20


def _merge(
    folder: str, generations: list[tuple[int, str]], entries: dict[str, str], rescan: bool
) -> tuple[pa.Table | None, int, int, int]:
    """(the next generation's table, or None if nothing is new; its number; parts it covers;
    entries added)."""
    number, base = 0, INDEX_SCHEMA.empty_table()
    if generations:
        number, newest = generations[-1]
        base = _read_index_file(newest)
    covered = set(pc.unique(base.column("part")).to_pylist())
    parquet_dir = join_uri(folder, "parquet")
    committed = {}
    if rescan or not generations:
        committed = {_part_name(uri): uri for uri in storage.list_files(parquet_dir, (".parquet",))}
    added = []
    for part, uri in sorted(entries.items()):
        if part in covered:
            continue
        if part in committed or storage.exists(_parquet_of(folder, part)):
            added.append(_read_index_file(uri))
            covered.add(part)
    for part, uri in sorted(committed.items()):
        if part not in covered:  # a part written before the index
            table = read_part(uri, PART_COLUMNS)
            added.append(entry_table(part, table, _part_bytes(folder, part)))
            covered.add(part)
    if generations and not added:
        return None, number, len(covered), 0
    merged = pa.concat_tables([base, *added]).sort_by([("part", "ascending")])
    return merged, number + 1, len(covered), len(added)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=1 << 20)
    return bytes(sink.getvalue())


def unindexed_parts(folder: str, index: FeatureIndex) -> list[str]:
    """Committed Parquet parts the index does not list (lists the folder: for checks only)."""
    listed = set(index.parts)
    parts = storage.list_files(join_uri(folder, "parquet"), (".parquet",))
    return sorted(p for p in map(_part_name, parts) if p not in listed)


def _list_index(index_dir: str) -> tuple[list[tuple[int, str]], dict[str, str]]:
    """(generations as (number, uri), oldest first; part name -> entry uri)."""
    generations, entries = [], {}
    prefix = join_uri(index_dir, "parts") + "/"
    for uri in storage.list_files(index_dir, (".parquet",)):
        if uri.startswith(prefix):
            entries[_part_name(uri)] = uri
        elif (match := _GENERATION.search(uri)) is not None:
            generations.append((int(match.group(1)), uri))
    return sorted(generations), entries


def read_parquet(uri: str, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet file (``columns`` of it, or all) through one open native handle.

    A path given to pyarrow is opened once for the footer and again for the pages, so a file
    removed in between would be half-read; one handle avoids that. The handle is Arrow's own
    (``OSFile``, or a buffer in Arrow's memory for an object store) and never a Python file
    object: Arrow's I/O threads release a Python-backed buffer as late as interpreter shutdown,
    and a thread that then asks for the GIL aborts the process ("terminate called without an
    active exception", seen in about 1 exit in 20).
    """
    if storage.is_remote(uri):
        sink = pa.BufferOutputStream()
        sink.write(storage.read_bytes(uri))
        return pq.read_table(pa.BufferReader(sink.getvalue()), columns=columns)
    with pa.OSFile(storage.local_path(uri)) as handle:
        return pq.read_table(handle, columns=columns)


def _read_index_file(uri: str) -> pa.Table:
    try:
        table = read_parquet(uri)
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowInvalid) as exc:
        raise StoreError(
            f"cannot read feature index file {uri}: {exc}; run `stpipe features compact "
            "--rescan` to rebuild the index from the parts"
        ) from exc
    return table.select(INDEX_SCHEMA.names).cast(INDEX_SCHEMA)


def read_part(uri: str, columns: list[str]) -> pa.Table:
    """``columns`` of the feature part at ``uri`` (a :class:`StoreError` if it is unreadable)."""
    try:
        return read_parquet(uri, columns)
    except (OSError, pa.ArrowInvalid) as exc:
        raise StoreError(f"cannot read feature part {uri}: {exc}") from exc


def _part_bytes(folder: str, part: str) -> int:
    total = 0
    for uri in (_parquet_of(folder, part), join_uri(folder, "tfrecords", f"{part}.tfrecord.gz")):
        if storage.exists(uri):
            total += storage.file_stat(uri)[0]
    return total


def _parquet_of(folder: str, part: str) -> str:
    return join_uri(folder, "parquet", f"{part}.parquet")


def _part_name(uri: str) -> str:
    return uri.rsplit("/", 1)[-1].split(".", 1)[0]


def frames_bytes(rows: pa.Table, streams: Iterable[str]) -> int:
    """Bytes of the float32 features of ``rows`` (index rows) in ``streams``, an empty stream
    counted as the one zero frame the model reads for it."""
    total = np.zeros(rows.num_rows, np.int64)
    for stream in streams:
        total += np.maximum(rows.column(f"{stream}_frames").to_numpy().astype(np.int64), 1)
    return int(total.sum()) * FEATURE_DIM * 4
