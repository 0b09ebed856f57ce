"""Stage 1, ingest: register media files in the warehouse.

Every file found is read once, through a descriptor opened with ``O_NOFOLLOW | O_NONBLOCK`` on
a path checked to be a regular file inside the folder being ingested, into a private staging
copy while it is hashed (clip id = SHA-256 of its bytes). The copy, not the landing file, is
then probed with PyAV against the cost limits (:mod:`pipeline.media.limits`), and moved into the
content-addressed media store, or into the quarantine folder beside a
``<clip_id>.reason.txt`` with ``status='quarantined'`` and the reason in ``media_files``.

Each file is handled inside its own boundary: whatever goes wrong with one file (it does not
decode, it is over a limit, its folder name is not a valid label, or an unexpected exception)
quarantines that file and the batch goes on. Only infrastructure failures (the warehouse
unreachable, a disk full, out of memory) stop the run, as an
:class:`~pipeline.errors.InfrastructureError`. The same content ingested again adds nothing,
and unchanged files (same path, size and modification time) are not even re-read.

Paths are stored as :func:`pipeline.text.printable` text, so a file name that is not valid
UTF-8 is recorded losslessly escaped instead of breaking the run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import posixpath
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline import storage
from pipeline.config import join_uri
from pipeline.errors import (
    ConfigError,
    InfrastructureError,
    LimitError,
    UnsafePathError,
    describe,
    infrastructure_problem,
)
from pipeline.labels import LabelError, label_problem
from pipeline.media.limits import MediaLimits
from pipeline.progress import NullProgress, Progress
from pipeline.text import printable
from pipeline.warehouse.database import Warehouse

log = logging.getLogger(__name__)

#: Split shares in percent of the clip-id space.
TRAIN_PERCENT, VAL_PERCENT = 80, 10
SPLIT_NAMES = ("train", "val", "test")
#: File name suffixes ingest looks at (video, then audio; lower case): any other file is
#: skipped unopened.
MEDIA_EXTENSIONS = (
    ".mp4",
    ".mov",
    ".mkv",
    ".webm",
    ".avi",
    ".wav",
    ".flac",
    ".ogg",
    ".mp3",
    ".m4a",
)


@dataclass(frozen=True)
class Candidate:
    """A file to ingest.

    ``uri`` is the path as found (it may hold undecodable bytes; it is what gets opened);
    ``inside`` is the folder it must resolve into when opened (local files). ``label`` is None
    for unlabelled files; ``label_error`` says why a folder name could not be a label (the file
    is quarantined). ``split`` comes from a manifest (None: chosen from the clip id).
    ``label_source`` says where the label came from: ``ingest`` (a folder) or ``manifest``.
    """

    uri: str
    label: str | None
    split: str | None = None
    inside: str | None = None
    label_error: str | None = None
    label_source: str = "ingest"

    @property
    def name(self) -> str:
        """The path as stored in the warehouse and shown to users."""
        return printable(self.uri)

    @property
    def extension(self) -> str:
        return posixpath.splitext(self.name)[1].lower()


@dataclass
class Found:
    """What discovery or a manifest yielded: candidates, and what was left out."""

    candidates: list[Candidate] = field(default_factory=list)
    unsupported: int = 0  # files that are not media, by their name
    refused: list[storage.Skipped] = field(default_factory=list)  # never opened, with why


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
    refused: int = 0  # links out of the folder, FIFOs, sockets, devices: never opened
    unreadable: int = 0  # vanished or unreadable while ingesting
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


def is_media_name(uri: str) -> bool:
    return posixpath.splitext(printable(uri))[1].lower() in MEDIA_EXTENSIONS


def read_manifest(manifest: str, landing_root: str) -> Found:
    """Candidates listed in a CSV manifest with columns ``path`` (relative to the manifest's
    folder, or absolute / a URI), and optional ``label`` and ``split`` (train, val or test).

    A path must resolve (links included) inside the manifest's folder or ``landing_root``;
    other rows are refused with the reason. Rows whose file name is not a media file are
    skipped, as in a folder.

    Raises:
        ConfigError: the manifest is missing or unreadable, lacks a ``path`` column, or has a
            bad split or an invalid label (the message gives the line).
    """
    if not storage.exists(manifest):
        raise ConfigError(f"manifest {manifest} does not exist")
    base = manifest.rsplit("/", 1)[0] if "/" in manifest else "."
    try:
        text = storage.read_bytes(manifest).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"manifest {manifest} is not UTF-8 text ({exc})") from exc
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and "path" not in rows[0]:
        raise ConfigError(
            f"manifest {manifest} needs a 'path' column (and optionally label, split)"
        )
    roots = [base, landing_root]
    found = Found()
    for number, row in enumerate(rows, start=2):
        path = (row.get("path") or "").strip()
        where = f"{manifest}, line {number}"
        if not path:
            raise ConfigError(f"{where}: the path is empty")
        split = (row.get("split") or "").strip() or None
        if split is not None and split not in SPLIT_NAMES:
            raise ConfigError(f"{where}: split {split!r} is not one of {SPLIT_NAMES}")
        label = (row.get("label") or "").strip() or None
        if label is not None and (problem := label_problem(label)) is not None:
            raise LabelError(f"{where}: {problem}")
        uri = path if path.startswith("/") or "://" in path else join_uri(base, path)
        inside = next((root for root in roots if _resolves_inside(uri, root)), None)
        if inside is None:
            found.refused.append(
                storage.Skipped(
                    printable(path),
                    f"{where}: outside the manifest's folder and the landing folder",
                )
            )
            continue
        if not is_media_name(uri):
            found.unsupported += 1
            log.info("%s: %s is not a media file (by its name); skipped", where, path)
            continue
        found.candidates.append(Candidate(uri, label, split, inside, label_source="manifest"))
    return found


def _resolves_inside(uri: str, root: str) -> bool:
    if storage.is_remote(uri) or storage.is_remote(root):
        scheme, _, rest = uri.partition("://")
        root_scheme, _, root_rest = root.partition("://")
        return scheme == root_scheme and storage.is_inside(
            posixpath.normpath("/" + rest), posixpath.normpath("/" + root_rest)
        )
    return storage.is_inside(
        os.path.realpath(storage.local_path(uri)), os.path.realpath(storage.local_path(root))
    )


def discover_media(root: str, *, labelled: bool, landing_layout: bool = False) -> Found:
    """Media files under ``root``, and what was left out.

    Only regular files are listed (see :func:`pipeline.storage.scan_files`: a link is followed
    only to a regular file inside ``root``; FIFOs, sockets and devices are refused unopened).

    Args:
        root: folder (local path or URI) to scan recursively.
        labelled: files under ``root/<label>/...`` get label ``<label>``.
        landing_layout: the landing folder's layout instead: files under
            ``root/labelled/<label>/...`` are labelled, all others unlabelled.
    """
    files, refused = storage.scan_files(root)
    found = Found(refused=refused)
    base = root.rstrip("/") + "/"
    for uri in files:
        if not is_media_name(uri):
            found.unsupported += 1
            continue
        parts = uri[len(base) :].split("/") if uri.startswith(base) else [uri]
        label: str | None = None
        if landing_layout:
            if len(parts) >= 3 and parts[0] == "labelled":
                label = parts[1]
        elif labelled:
            if len(parts) >= 2:
                label = parts[0]
            else:
                log.warning(
                    "%s is not inside a <label>/ folder; ingesting it unlabelled",
                    printable(uri),
                )
        problem = label_problem(label) if label is not None else None
        if problem is not None:
            found.candidates.append(Candidate(uri, None, None, root, f"folder name {problem}"))
        else:
            found.candidates.append(Candidate(uri, label, None, root))
    return found


@dataclass(frozen=True)
class _Examined:
    candidate: Candidate
    size: int
    mtime: float
    clip_id: str  # "" when the file could not be read at all
    info: dict[str, Any] | None
    error: str | None
    staged: str | None = None  # private copy, moved into place by _register


def _examine(candidate: Candidate, staging_root: str, limits: MediaLimits) -> _Examined:
    """Copy, hash and probe one file (runs in a worker thread: hashing and FFmpeg release the
    GIL). Problems with the file become the result's ``error``; only infrastructure failures
    raise."""
    from pipeline.media.probe import probe_media

    try:
        staged = storage.stage_copy(
            candidate.uri, staging_root, max_bytes=limits.max_file_bytes, inside=candidate.inside
        )
    except storage.FileTooLargeError as exc:
        limit = LimitError(
            f"the file is over {limits.max_file_bytes:,} bytes ({exc})", "PIPELINE_MAX_FILE_BYTES"
        )
        clip_id = _unhashed_id(candidate, exc.size, exc.mtime)
        reason = f"{candidate.name}: {limit}; not copied"
        return _Examined(candidate, exc.size, exc.mtime, clip_id, None, reason)
    except (OSError, UnsafePathError) as exc:
        if infrastructure_problem(exc):
            raise
        return _Examined(candidate, 0, 0.0, "", None, f"cannot read {candidate.name}: {exc}")
    error: str | None = candidate.label_error
    info: dict[str, Any] | None = None
    if error is None and staged.size == 0:
        error = f"{candidate.name} is empty (0 bytes)"
    if error is None:
        try:
            info = probe_media(
                staged.path, limits, size_bytes=staged.size, name=candidate.name
            ).as_row()
        except Exception as exc:
            if infrastructure_problem(exc):
                storage.remove(staged.path)
                raise
            error = describe(exc)
    return _Examined(candidate, staged.size, staged.mtime, staged.sha256, info, error, staged.path)


def _unhashed_id(candidate: Candidate, size: int, mtime: float) -> str:
    """Clip id of a file too large to read: a hash of where it was and what it looked like
    (it is recorded as quarantined, so it needs one, but its bytes are never read)."""
    return hashlib.sha256(f"unhashed\0{candidate.name}\0{size}\0{mtime}".encode()).hexdigest()


def ingest_media(
    found: Found,
    warehouse: Warehouse,
    *,
    media_root: str,
    quarantine_root: str,
    staging_root: str,
    limits: MediaLimits | None = None,
    workers: int = 2,
    progress: Progress | None = None,
) -> IngestSummary:
    """Register ``found.candidates`` in the warehouse. Safe to re-run: existing clips add
    nothing.

    Raises:
        InfrastructureError: the warehouse, the disk or memory failed (nothing half-written;
            re-run once fixed).
    """
    limits = limits or MediaLimits()
    progress = progress or NullProgress()
    summary = IngestSummary(skipped_unsupported=found.unsupported, refused=len(found.refused))
    for skipped in found.refused:
        log.warning("refused %s: %s", skipped.uri, skipped.reason)
        summary.errors.append(f"{skipped.uri}: {skipped.reason}")
    storage.clean_staging(staging_root)
    todo = _changed_candidates(found, warehouse, summary)
    progress.start("ingest", len(todo), "files")
    try:
        for examined in _examine_all(todo, staging_root, limits, workers):
            try:
                _register(examined, warehouse, media_root, quarantine_root, summary)
            except Exception as exc:
                if infrastructure_problem(exc):
                    raise
                _record_failure(examined, exc, warehouse, media_root, quarantine_root, summary)
            finally:
                if examined.staged is not None:
                    storage.remove(examined.staged)  # not moved into place: not needed
            progress.advance(1)
    except Exception as exc:
        problem = infrastructure_problem(exc)
        if problem is None:
            raise
        raise InfrastructureError(
            f"ingest stopped: {problem}. Files registered so far are complete; re-run "
            "`stpipe ingest` (or the media_ingest DAG) once fixed."
        ) from exc
    progress.finish()
    log.info(
        "ingest: %d found, %d added, %d quarantined, %d already known, %d unchanged, "
        "%d refused, %d unreadable",
        summary.found,
        summary.added,
        summary.quarantined,
        summary.already_known,
        summary.unchanged,
        summary.refused,
        summary.unreadable,
    )
    return summary


def _changed_candidates(
    found: Found, warehouse: Warehouse, summary: IngestSummary
) -> list[Candidate]:
    """The candidates whose source is new or has changed since it was last ingested."""
    known = warehouse.known_sources()
    todo: list[Candidate] = []
    for candidate in found.candidates:
        summary.found += 1
        if _unchanged(candidate, known, warehouse):
            summary.unchanged += 1
        else:
            todo.append(candidate)
    return todo


def _unchanged(
    candidate: Candidate,
    known: dict[str, tuple[int, float, str, str | None]],
    warehouse: Warehouse,
) -> bool:
    """Seen before at the same path with the same size, time, label and split: skip it."""
    seen = known.get(candidate.name)
    if seen is None:
        return False
    try:
        size, mtime = storage.file_stat(candidate.uri)
    except OSError:
        return False  # vanished or unreadable: examining it says so
    if (size, mtime) != seen[:2] or seen[3] != candidate.label:
        return False
    if candidate.split is None:
        return True
    clip = warehouse.get_clip(seen[2])
    return clip is None or clip.split == candidate.split


def _examine_all(
    todo: list[Candidate], staging_root: str, limits: MediaLimits, workers: int
) -> Iterator[_Examined]:
    if workers <= 1 or len(todo) <= 1:
        yield from (_examine(c, staging_root, limits) for c in todo)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as pool:
        yield from pool.map(lambda c: _examine(c, staging_root, limits), todo)


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
        summary.errors.append(examined.error or candidate.name)
        log.error("skipped %s", examined.error)
        return
    existing = warehouse.get_clip(clip_id)
    if existing is not None:
        summary.already_known += 1
        _update_known(candidate, existing, warehouse, summary)
    elif examined.error is None:
        media_uri = join_uri(media_root, clip_id[:2], clip_id + candidate.extension)
        _place(examined.staged, media_uri)
        row = {**_row(examined, media_uri, "ok"), **(examined.info or {})}
        summary.added += int(warehouse.add_clip(row))
    else:
        _quarantine(examined, examined.error, warehouse, quarantine_root, summary)
    warehouse.record_source(candidate.name, clip_id, examined.size, examined.mtime, candidate.label)


def _update_known(
    candidate: Candidate, existing: Any, warehouse: Warehouse, summary: IngestSummary
) -> None:
    """Known content found again: a manifest may move it to another split, and a label may
    arrive for an unlabelled clip (an existing label is never overwritten)."""
    if candidate.split is not None and candidate.split != existing.split:
        warehouse.set_split(existing.clip_id, candidate.split)
        summary.split_changed += 1
        log.info(
            "%s moved from %s to %s (manifest)", candidate.name, existing.split, candidate.split
        )
    if candidate.label is None:
        return
    if existing.label is None:
        summary.labelled_now += int(
            warehouse.set_label_if_missing(
                existing.clip_id, candidate.label, candidate.label_source
            )
        )
    elif existing.label != candidate.label:
        summary.label_conflicts += 1
        log.warning(
            "%s has label %r but the same content was ingested as %r from %s; keeping %r",
            candidate.name,
            candidate.label,
            existing.label,
            existing.uri,
            existing.label,
        )


def _place(staged: str | None, uri: str) -> None:
    """Move the staged copy to ``uri`` (content-addressed: an existing copy is the same)."""
    if staged is not None and not storage.exists(uri):
        storage.move_into(staged, uri)


def _quarantine(
    examined: _Examined,
    reason: str,
    warehouse: Warehouse,
    quarantine_root: str,
    summary: IngestSummary,
) -> None:
    """Keep the file's copy (if it was read) and the reason in the quarantine folder, and
    record the clip as quarantined."""
    candidate, clip_id = examined.candidate, examined.clip_id
    copy_uri = join_uri(quarantine_root, clip_id + candidate.extension)
    _place(examined.staged, copy_uri)
    kept = copy_uri if examined.staged is not None or storage.exists(copy_uri) else None
    storage.write_bytes(
        join_uri(quarantine_root, f"{clip_id}.reason.txt"),
        f"{candidate.name}\n{reason}\n".encode(errors="backslashreplace"),
    )
    row = {**_row(examined, kept, "quarantined"), "error": reason}
    if warehouse.add_clip(row):
        summary.quarantined += 1
        summary.errors.append(f"{candidate.name}: {reason}")
        log.warning("quarantined %s: %s", candidate.name, reason)


def _record_failure(
    examined: _Examined,
    exc: Exception,
    warehouse: Warehouse,
    media_root: str,
    quarantine_root: str,
    summary: IngestSummary,
) -> None:
    """An unexpected exception while registering one file: quarantine it with the exception's
    type and message, remove a media copy no row refers to, and go on."""
    candidate, clip_id = examined.candidate, examined.clip_id
    reason = describe(exc)
    log.error("ingest of %s failed: %s", candidate.name, reason, exc_info=exc)
    if not clip_id:
        summary.unreadable += 1
        summary.errors.append(f"{candidate.name}: {reason}")
        return
    if warehouse.get_clip(clip_id) is not None:
        # The clip itself is registered (from this file or another with the same bytes); only
        # this sighting failed. It is retried on the next run.
        summary.errors.append(f"{candidate.name}: {reason}")
        return
    _quarantine(examined, reason, warehouse, quarantine_root, summary)
    storage.remove(join_uri(media_root, clip_id[:2], clip_id + candidate.extension))


def _row(examined: _Examined, media_uri: str | None, status: str) -> dict[str, Any]:
    """The ``media_files`` columns every new clip has."""
    candidate = examined.candidate
    return {
        "clip_id": examined.clip_id,
        "uri": candidate.name,
        "media_uri": media_uri,
        "label": candidate.label,
        "label_source": candidate.label_source,
        "split": candidate.split or split_for(examined.clip_id),
        "status": status,
        "error": examined.error if status == "quarantined" else None,
        "size_bytes": examined.size,
    }
