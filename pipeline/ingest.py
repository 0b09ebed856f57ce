"""Stage 1, ingest: register media files in the warehouse.

For every video/audio file found: clip id = SHA-256 of its bytes; probe it with PyAV (and decode
its first frame); copy it into the content-addressed media store; add a ``media_files`` row with
its split. Files that cannot be probed are copied to the quarantine folder beside a
``<clip_id>.reason.txt`` and recorded with ``status='quarantined'`` and the error; the batch goes
on. The same content ingested again adds nothing, and unchanged files (same path, size and
modification time) are not even re-read.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline import storage
from pipeline.config import join_uri
from pipeline.errors import ConfigError, MediaError
from pipeline.progress import NullProgress, Progress
from pipeline.warehouse import Warehouse

log = logging.getLogger(__name__)

#: Split shares in percent of the clip-id space.
TRAIN_PERCENT, VAL_PERCENT = 80, 10


@dataclass(frozen=True)
class Candidate:
    """A file found by discovery, with the label its location gives it (None = unlabelled) and,
    from a manifest, the split it must be in (None = chosen from the clip id)."""

    uri: str
    label: str | None
    split: str | None = None


@dataclass
class IngestSummary:
    found: int = 0
    added: int = 0
    quarantined: int = 0
    already_known: int = 0
    unchanged: int = 0
    labelled_now: int = 0
    split_changed: int = 0
    label_conflicts: int = 0
    skipped_unsupported: int = 0
    unreadable: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        summary = asdict(self)
        summary["errors"] = self.errors[:20]  # XCom stays small
        return summary


def split_for(clip_id: str) -> str:
    """Deterministic train/val/test split (about 80/10/10) from the clip id."""
    bucket = int(clip_id[:8], 16) % 100
    if bucket < TRAIN_PERCENT:
        return "train"
    return "val" if bucket < TRAIN_PERCENT + VAL_PERCENT else "test"


SPLIT_NAMES = ("train", "val", "test")


def read_manifest(manifest: str) -> list[Candidate]:
    """Candidates listed in a CSV manifest with columns ``path`` (relative to the manifest's
    folder, or absolute / a URI), and optional ``label`` and ``split`` (train, val or test).

    Raises:
        ConfigError: the manifest is missing, lacks a ``path`` column or has a bad split.
    """
    import csv
    import io

    if not storage.exists(manifest):
        raise ConfigError(f"manifest {manifest} does not exist")
    base = manifest.rsplit("/", 1)[0] if "/" in manifest else "."
    rows = list(csv.DictReader(io.StringIO(storage.read_bytes(manifest).decode())))
    if rows and "path" not in rows[0]:
        raise ConfigError(
            f"manifest {manifest} needs a 'path' column (and optionally label, split)"
        )
    candidates = []
    for number, row in enumerate(rows, start=2):
        path = row["path"].strip()
        split = (row.get("split") or "").strip() or None
        if split is not None and split not in SPLIT_NAMES:
            raise ConfigError(
                f"{manifest}, line {number}: split {split!r} is not one of {SPLIT_NAMES}"
            )
        uri = path if path.startswith("/") or "://" in path else join_uri(base, path)
        candidates.append(Candidate(uri, (row.get("label") or "").strip() or None, split))
    return candidates


def discover_media(
    root: str, *, labelled: bool, landing_layout: bool = False
) -> tuple[list[Candidate], int]:
    """Media files under ``root`` and how many other files were skipped.

    Args:
        root: folder (local path or URI) to scan recursively.
        labelled: files under ``root/<label>/...`` get label ``<label>``.
        landing_layout: the landing folder's layout instead: files under
            ``root/labelled/<label>/...`` are labelled, all others unlabelled.
    """
    from pipeline.media import MEDIA_EXTENSIONS

    files = storage.list_files(root)
    media = [f for f in files if f.lower().endswith(MEDIA_EXTENSIONS)]
    base = root.rstrip("/") + "/"
    candidates = []
    for uri in media:
        parts = uri[len(base) :].split("/") if uri.startswith(base) else [uri]
        label: str | None = None
        if landing_layout:
            if len(parts) >= 3 and parts[0] == "labelled":
                label = parts[1]
        elif labelled:
            if len(parts) >= 2:
                label = parts[0]
            else:
                log.warning("%s is not inside a <label>/ folder; ingesting it unlabelled", uri)
        candidates.append(Candidate(uri, label))
    return candidates, len(files) - len(media)


@dataclass(frozen=True)
class _Examined:
    candidate: Candidate
    size: int
    mtime: float
    clip_id: str
    info: dict[str, Any] | None
    error: str | None


def _examine(candidate: Candidate) -> _Examined:
    """Hash and probe one file (runs in a worker thread: hashing and FFmpeg release the GIL)."""
    from pipeline.media import probe_media

    try:
        size, mtime = storage.file_stat(candidate.uri)
        digest = hashlib.sha256()
        with storage.open_read(candidate.uri) as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:  # vanished or unreadable: nothing to hash, nothing to quarantine
        return _Examined(candidate, 0, 0.0, "", None, f"cannot read {candidate.uri}: {exc}")
    clip_id = digest.hexdigest()
    try:
        info: dict[str, Any] | None = probe_media(candidate.uri).as_row()
        error = None
    except MediaError as exc:
        info, error = None, str(exc)
    if size == 0:
        info, error = None, f"{candidate.uri} is empty (0 bytes)"
    return _Examined(candidate, size, mtime, clip_id, info, error)


def ingest_media(
    candidates: Iterable[Candidate],
    warehouse: Warehouse,
    *,
    media_root: str,
    quarantine_root: str,
    workers: int = 4,
    progress: Progress | None = None,
) -> IngestSummary:
    """Register ``candidates`` in the warehouse. Safe to re-run: existing clips add nothing."""
    progress = progress or NullProgress()
    summary = IngestSummary()
    known = warehouse.known_sources()
    todo: list[Candidate] = []
    for candidate in candidates:
        summary.found += 1
        seen = known.get(candidate.uri)
        if seen is not None:
            size, mtime = storage.file_stat(candidate.uri)
            if (size, mtime) == seen[:2] and seen[3] == candidate.label:
                clip = warehouse.get_clip(seen[2]) if candidate.split else None
                if clip is None or clip.split == candidate.split:
                    summary.unchanged += 1
                    continue
        todo.append(candidate)

    progress.start("ingest", len(todo), "files")
    for examined in _examine_all(todo, workers):
        _register(examined, warehouse, media_root, quarantine_root, summary)
        progress.advance(1)
    progress.finish()
    log.info(
        "ingest: %d found, %d added, %d quarantined, %d already known, %d unchanged",
        summary.found,
        summary.added,
        summary.quarantined,
        summary.already_known,
        summary.unchanged,
    )
    return summary


def _examine_all(todo: list[Candidate], workers: int) -> Iterator[_Examined]:
    if workers <= 1 or len(todo) <= 1:
        yield from map(_examine, todo)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as pool:
        yield from pool.map(_examine, todo)


def _register(
    examined: _Examined,
    warehouse: Warehouse,
    media_root: str,
    quarantine_root: str,
    summary: IngestSummary,
) -> None:
    candidate, clip_id = examined.candidate, examined.clip_id
    if not clip_id:
        summary.unreadable += 1
        summary.errors.append(examined.error or "")
        log.error("skipped %s", examined.error)
        return
    extension = "." + candidate.uri.rsplit(".", 1)[-1].lower()
    existing = warehouse.get_clip(clip_id)
    if existing is not None:
        summary.already_known += 1
        if candidate.split is not None and candidate.split != existing.split:
            warehouse.set_split(clip_id, candidate.split)
            summary.split_changed += 1
            log.info(
                "%s moved from %s to %s (manifest)", candidate.uri, existing.split, candidate.split
            )
        if candidate.label is not None:
            if existing.label is None:
                summary.labelled_now += int(
                    warehouse.set_label_if_missing(clip_id, candidate.label)
                )
            elif existing.label != candidate.label:
                summary.label_conflicts += 1
                log.warning(
                    "%s has label %r but the same content was ingested as %r from %s; keeping %r",
                    candidate.uri,
                    candidate.label,
                    existing.label,
                    existing.uri,
                    existing.label,
                )
    elif examined.error is None:
        media_uri = join_uri(media_root, clip_id[:2], clip_id + extension)
        if not storage.exists(media_uri):
            storage.copy_file(candidate.uri, media_uri)
        row = {**_row(examined, media_uri, "ok"), **(examined.info or {})}
        summary.added += int(warehouse.add_clip(row))
    else:
        quarantined_uri = join_uri(quarantine_root, clip_id + extension)
        if not storage.exists(quarantined_uri):
            storage.copy_file(candidate.uri, quarantined_uri)
            storage.write_bytes(
                join_uri(quarantine_root, clip_id + ".reason.txt"),
                f"{candidate.uri}\n{examined.error}\n".encode(),
            )
        row = _row(examined, quarantined_uri, "quarantined")
        if warehouse.add_clip(row):
            summary.quarantined += 1
            summary.errors.append(examined.error or "")
            log.warning("quarantined %s: %s", candidate.uri, examined.error)
    warehouse.record_source(candidate.uri, clip_id, examined.size, examined.mtime, candidate.label)


def _row(examined: _Examined, media_uri: str, status: str) -> dict[str, Any]:
    """The ``media_files`` columns every new clip has."""
    candidate = examined.candidate
    return {
        "clip_id": examined.clip_id,
        "uri": candidate.uri,
        "media_uri": media_uri,
        "label": candidate.label,
        "split": candidate.split or split_for(examined.clip_id),
        "status": status,
        "error": examined.error if status == "quarantined" else None,
        "size_bytes": examined.size,
    }
