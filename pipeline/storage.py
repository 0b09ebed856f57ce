"""The one small I/O layer: local paths and object-store URIs differ only in their root.

Everything the pipeline reads or writes under its data dir goes through these functions.
Local paths use the standard library; URIs with a scheme (``s3://``, ``gs://``, ...) go through
fsspec, which needs the matching driver installed (``s3fs`` for s3://).

Writes are atomic: data goes to a temporary name in the same folder and is renamed into place,
so a crash never leaves a half-written file under its real name. (Object stores make a PUT
visible only once complete, which gives the same guarantee.)

Object stores are asked every time: fsspec's listings cache is off. With it, a folder listed
once hid the files other hosts (or threads) wrote into it afterwards: ``exists`` said False and
``open`` raised FileNotFoundError for a feature part committed after the listing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pipeline.errors import UnsafePathError
from pipeline.text import printable

log = logging.getLogger(__name__)


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def _local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def _fs(uri: str) -> Any:
    import fsspec  # only needed for object stores

    fs, _ = fsspec.core.url_to_fs(uri, use_listings_cache=False)
    return fs


def exists(uri: str) -> bool:
    return _fs(uri).exists(uri) if is_remote(uri) else _local(uri).exists()


def makedirs(uri: str) -> None:
    if not is_remote(uri):  # object stores have no folders to make
        _local(uri).mkdir(parents=True, exist_ok=True)


def list_files(root: str, suffixes: tuple[str, ...] = ()) -> list[str]:
    """All regular files below ``root`` (recursive, sorted), optionally only those ending in
    ``suffixes``. Hidden files and folders (names starting with '.') and temporary files are
    skipped, and so is anything :func:`scan_files` would refuse."""
    files, _skipped = scan_files(root)
    if suffixes:
        files = [f for f in files if f.lower().endswith(suffixes)]
    return files


@dataclass(frozen=True)
class Skipped:
    """A folder entry that was not listed, and why (``uri`` is :func:`printable`)."""

    uri: str
    reason: str


def scan_files(root: str) -> tuple[list[str], list[Skipped]]:
    """Regular files below ``root`` (recursive, sorted) and the entries refused, with reasons.

    Nothing is opened: every entry is ``lstat``-ed. A symbolic link is listed only when it
    resolves to a regular file inside ``root``; links leading out of it, broken links, links to
    folders (their files are found under their own path), FIFOs, sockets and devices are
    refused. Hidden and temporary names are left out silently. Object stores hold only objects,
    so a remote root is listed as it is.
    """
    if is_remote(root):
        fs = _fs(root)
        if not fs.exists(root):
            return [], []
        protocol = root.split("://", 1)[0]
        found = [f"{protocol}://{p}" for p in fs.find(root)]
        return sorted(f for f in found if _listable(f.rsplit("/", 1)[-1])), []
    base = _local(root)
    if not base.is_dir():
        return [], []
    real_root = os.path.realpath(base)
    files: list[str] = []
    skipped: list[Skipped] = []
    folders = [str(base)]
    while folders:
        folder = folders.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            skipped.append(Skipped(printable(folder), f"cannot list this folder ({exc.strerror})"))
            continue
        for entry in entries:
            if not _listable(entry.name):
                continue
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError:
                continue  # vanished since the folder was listed
            if stat.S_ISDIR(mode):
                folders.append(entry.path)
            elif stat.S_ISREG(mode):
                files.append(entry.path)
            elif stat.S_ISLNK(mode):
                problem = _link_problem(entry.path, real_root)
                if problem is None:
                    files.append(entry.path)
                else:
                    skipped.append(Skipped(printable(entry.path), problem))
            else:
                skipped.append(
                    Skipped(printable(entry.path), f"a {_kind(mode)}, not a regular file")
                )
    return sorted(files), sorted(skipped, key=lambda s: s.uri)


def _listable(name: str) -> bool:
    return not name.startswith(".") and ".tmp-" not in name


def _link_problem(path: str, real_root: str) -> str | None:
    """Why the link at ``path`` must not be followed, or None if it leads to a regular file
    inside ``real_root``."""
    target = os.path.realpath(path)
    if not is_inside(target, real_root):
        return f"a link to {printable(target)}, outside {printable(real_root)}"
    try:
        mode = os.stat(target).st_mode
    except OSError as exc:
        return f"a broken link ({exc.strerror})"
    if stat.S_ISDIR(mode):
        return "a link to a folder (its files are found under their own path)"
    if not stat.S_ISREG(mode):
        return f"a link to a {_kind(mode)}, not a regular file"
    return None


def is_inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or below it (both already resolved, no '..' left)."""
    folder = folder.rstrip("/") or "/"
    return path == folder or path.startswith(folder if folder == "/" else folder + "/")


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "named pipe (FIFO)"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISDIR, "folder"),
    ):
        if test(mode):
            return name
    return "special file"


def file_stat(uri: str) -> tuple[int, float]:
    """(size in bytes, modification time in seconds since the epoch)."""
    if is_remote(uri):
        info = _fs(uri).info(uri)
        mtime = info.get("mtime") or info.get("LastModified") or 0
        return int(info["size"]), float(getattr(mtime, "timestamp", lambda: mtime)())
    stat = _local(uri).stat()
    return stat.st_size, stat.st_mtime


@contextlib.contextmanager
def open_read(uri: str) -> Iterator[IO[bytes]]:
    if is_remote(uri):
        with _fs(uri).open(uri, "rb") as handle:
            yield handle
    else:
        with _local(uri).open("rb") as handle:
            yield handle


@contextlib.contextmanager
def open_regular(uri: str, inside: str | None = None) -> Iterator[IO[bytes]]:
    """Open ``uri`` for reading only if it is a regular file (and, for a local path with
    ``inside`` given, only if it resolves inside that folder).

    Links are resolved first and the result is opened with ``O_NOFOLLOW | O_NONBLOCK``, then
    checked with ``fstat``: a FIFO, socket or device swapped in after listing is refused without
    a blocking read.

    Raises:
        UnsafePathError: not a regular file, or outside ``inside``.
        OSError: the file vanished or is unreadable.
    """
    if is_remote(uri):
        with open_read(uri) as handle:
            yield handle
        return
    real = os.path.realpath(_local(uri))
    if inside is not None and not is_inside(real, os.path.realpath(_local(inside))):
        raise UnsafePathError(
            f"{printable(uri)} resolves to {printable(real)}, outside {printable(inside)}"
        )
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(real, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafePathError(f"{printable(uri)} is a {_kind(mode)}, not a regular file")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as handle:
        yield handle


@dataclass(frozen=True)
class Staged:
    """A private copy of a file, made while hashing it (see :func:`stage_copy`)."""

    path: str  # local temporary file; the caller moves it into place or deletes it
    sha256: str
    size: int
    mtime: float


class FileTooLargeError(Exception):
    """Raised by :func:`stage_copy` for a file over ``max_bytes`` (nothing was copied)."""

    def __init__(self, size: int, mtime: float) -> None:
        super().__init__(f"{size} bytes")
        self.size, self.mtime = size, mtime


def stage_copy(uri: str, staging_dir: str, *, max_bytes: int, inside: str | None = None) -> Staged:
    """Copy ``uri`` into ``staging_dir`` (local) and hash it, reading it once.

    The copy is what later steps probe and store, so a file changed or replaced in the landing
    folder after this point cannot affect them. A file over ``max_bytes`` (by its size, or
    growing past it while read) is not copied.

    Raises:
        FileTooLargeError: the file is over ``max_bytes``.
        UnsafePathError: see :func:`open_regular`.
        OSError: the file cannot be read, or the copy cannot be written.
    """
    os.makedirs(staging_dir, exist_ok=True)
    with open_regular(uri, inside) as reader:
        size, mtime = _size_and_mtime(uri, reader)
        if size > max_bytes:
            raise FileTooLargeError(size, mtime)
        digest = hashlib.sha256()
        copied = 0
        fd, tmp = tempfile.mkstemp(prefix=".tmp-stage-", dir=staging_dir)
        try:
            with os.fdopen(fd, "wb") as writer:
                while chunk := reader.read(1 << 20):
                    copied += len(chunk)
                    if copied > max_bytes:
                        raise FileTooLargeError(copied, mtime)
                    digest.update(chunk)
                    writer.write(chunk)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return Staged(tmp, digest.hexdigest(), copied, mtime)


def _size_and_mtime(uri: str, handle: IO[bytes]) -> tuple[int, float]:
    if is_remote(uri):
        return file_stat(uri)
    info = os.fstat(handle.fileno())
    return info.st_size, info.st_mtime


def clean_staging(staging_dir: str, older_than_seconds: float = 6 * 3600) -> None:
    """Delete copies a killed run left in ``staging_dir`` (old enough not to be in use)."""
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(staging_dir):
            with contextlib.suppress(OSError):
                if time.time() - entry.stat().st_mtime > older_than_seconds:
                    os.unlink(entry.path)


def move_into(local_tmp: str, uri: str) -> None:
    """Move a local temporary file to ``uri`` (atomically for local targets; an object store's
    PUT is atomic too). An existing target is replaced."""
    if is_remote(uri):
        try:
            _fs(uri).put_file(local_tmp, uri)
        finally:
            Path(local_tmp).unlink(missing_ok=True)
        return
    target = _local(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(local_tmp, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        copy_file(local_tmp, uri)  # another file system: copy under a temporary name, rename
        Path(local_tmp).unlink(missing_ok=True)


def local_path(uri: str) -> str:
    """A path that libraries wanting a filename (PyAV, soundfile) can open.

    Object-store files are opened through fsspec by callers instead; this is for local data.
    """
    return str(_local(uri))


@contextlib.contextmanager
def atomic_write(uri: str) -> Iterator[str]:
    """Yield a temporary local path in the target's folder; rename it to ``uri`` on success.

    For an object store the temporary file is local and uploaded on success.
    """
    name = uri.rsplit("/", 1)[-1]
    if is_remote(uri):
        tmp_dir = Path(os.environ.get("TMPDIR", "/tmp"))
        tmp = tmp_dir / f".tmp-{uuid.uuid4().hex}-{name}"
        try:
            yield str(tmp)
            _fs(uri).put_file(str(tmp), uri)
        finally:
            tmp.unlink(missing_ok=True)
        return
    target = _local(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{uuid.uuid4().hex}-{name}")
    try:
        yield str(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(uri: str, data: bytes) -> None:
    with atomic_write(uri) as tmp:
        Path(tmp).write_bytes(data)


def create_exclusive(uri: str, data: bytes) -> bool:
    """Write ``data`` to ``uri`` only if nothing is there yet; True if this call wrote it.

    Of writers racing on one name exactly one wins, and nobody sees a partial file. Local: the
    file is written under a temporary name and hard-linked into place, which fails if the name
    exists (on one machine or one NFS export). S3: a conditional PUT (``If-None-Match: *``,
    s3fs's ``mode="create"``), which the store refuses if the key exists. Other fsspec file
    systems without conditional writes check, then write: two first writers at the same
    instant may both write and the later one stands (callers read the file back rather than
    trust their own copy).
    """
    if is_remote(uri):
        try:
            _fs(uri).pipe_file(uri, data, mode="create")
            return True
        except FileExistsError:
            return False
    target = _local(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{uuid.uuid4().hex}-{target.name}")
    try:
        tmp.write_bytes(data)
        os.link(tmp, target)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def read_bytes(uri: str) -> bytes:
    with open_read(uri) as handle:
        return handle.read()


def copy_file(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` atomically (either may be local or remote)."""
    with atomic_write(dst) as tmp, open_read(src) as reader, open(tmp, "wb") as writer:
        shutil.copyfileobj(reader, writer, length=1 << 20)


def remove(uri: str) -> None:
    if is_remote(uri):
        with contextlib.suppress(FileNotFoundError):
            _fs(uri).rm(uri)
    else:
        _local(uri).unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(uri: str) -> Iterator[Path]:
    """Yield an empty local folder; on success its files appear at ``uri`` all at once.

    Local: the folder is built under a temporary name beside ``uri`` and renamed into place, so
    a reader sees all of it or nothing. If ``uri`` already exists (an earlier attempt of the
    same work got that far) it is kept and the new copy dropped; temporary folders of earlier
    attempts that were killed are removed. The caller must own ``uri``'s name (a reserved
    model version, say). Object stores have no folders
    to rename: files are uploaded one by one, ``metadata.json`` (the commit marker readers
    check) last.
    """
    if is_remote(uri):
        with tempfile.TemporaryDirectory(prefix="stpipe-folder-") as local:
            yield Path(local)
            names = sorted(p.name for p in Path(local).iterdir() if p.is_file())
            for name in sorted(names, key=lambda n: n == "metadata.json"):
                _fs(uri).put_file(str(Path(local, name)), f"{uri.rstrip('/')}/{name}")
        return
    target = _local(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    for leftover in target.parent.glob(f".tmp-*-{target.name}"):  # of an attempt killed midway
        shutil.rmtree(leftover, ignore_errors=True)
    building = target.with_name(f".tmp-{uuid.uuid4().hex}-{target.name}")
    building.mkdir()
    try:
        yield building
        try:
            os.rename(building, target)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            log.info("%s already exists (an earlier attempt finished it); keeping it", uri)
    finally:
        shutil.rmtree(building, ignore_errors=True)


@contextlib.contextmanager
def file_lock(path: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (a local lock file, created if missing).

    The kernel releases it when the process dies, so a killed holder never blocks the next run.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
