"""The one small I/O layer: local paths and object-store URIs differ only in their root.

Everything the pipeline reads or writes under its data dir goes through these functions.
Local paths use the standard library; URIs with a scheme (``s3://``, ``gs://``, ...) go through
fsspec, which needs the matching driver installed (``s3fs`` for s3://).

Writes are atomic: data goes to a temporary name in the same folder and is renamed into place,
so a crash never leaves a half-written file under its real name. (Object stores make a PUT
visible only once complete, which gives the same guarantee.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def _local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def _fs(uri: str) -> Any:
    import fsspec  # only needed for object stores

    fs, _ = fsspec.core.url_to_fs(uri)
    return fs


def exists(uri: str) -> bool:
    return _fs(uri).exists(uri) if is_remote(uri) else _local(uri).exists()


def makedirs(uri: str) -> None:
    if not is_remote(uri):  # object stores have no folders to make
        _local(uri).mkdir(parents=True, exist_ok=True)


def list_files(root: str, suffixes: tuple[str, ...] = ()) -> list[str]:
    """All files below ``root`` (recursive, sorted), optionally only those ending in ``suffixes``.

    Hidden files and folders (names starting with '.') and temporary files are skipped.
    """
    if is_remote(root):
        fs = _fs(root)
        if not fs.exists(root):
            return []
        protocol = root.split("://", 1)[0]
        found = [f"{protocol}://{p}" for p in fs.find(root)]
    else:
        base = _local(root)
        if not base.is_dir():
            return []
        found = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            found.extend(str(Path(dirpath, name)) for name in filenames)
    names = [
        f
        for f in found
        if not f.rsplit("/", 1)[-1].startswith(".") and ".tmp-" not in f.rsplit("/", 1)[-1]
    ]
    if suffixes:
        names = [f for f in names if f.lower().endswith(suffixes)]
    return sorted(names)


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


def read_bytes(uri: str) -> bytes:
    with open_read(uri) as handle:
        return handle.read()


def copy_file(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` atomically (either may be local or remote)."""
    with atomic_write(dst) as tmp, open_read(src) as reader, open(tmp, "wb") as writer:
        shutil.copyfileobj(reader, writer, length=1 << 20)


def remove(uri: str) -> None:
    if is_remote(uri):
        _fs(uri).rm(uri)
    else:
        _local(uri).unlink(missing_ok=True)
