from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import storage


def test_atomic_write_publishes_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.bin"

    def crash_mid_write() -> None:
        with storage.atomic_write(str(target)) as tmp:
            Path(tmp).write_bytes(b"half")
            raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        crash_mid_write()
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temporary file left behind

    storage.write_bytes(str(target), b"whole")
    assert target.read_bytes() == b"whole"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]


def test_list_files_skips_hidden_and_temporary_files(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.wav").write_bytes(b"1")
    (tmp_path / "a" / ".hidden.wav").write_bytes(b"1")
    (tmp_path / "a" / ".tmp-123-y.wav").write_bytes(b"1")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "z.wav").write_bytes(b"1")
    (tmp_path / "b.txt").write_bytes(b"1")
    assert storage.list_files(str(tmp_path)) == [
        str(tmp_path / "a" / "x.wav"),
        str(tmp_path / "b.txt"),
    ]
    assert storage.list_files(str(tmp_path), (".wav",)) == [str(tmp_path / "a" / "x.wav")]
    assert storage.list_files(str(tmp_path / "missing")) == []


def test_copy_file_is_complete_and_atomic(tmp_path: Path) -> None:
    source = tmp_path / "src.bin"
    source.write_bytes(bytes(range(256)) * 5000)
    target = tmp_path / "out" / "dst.bin"
    storage.copy_file(str(source), str(target))
    assert target.read_bytes() == source.read_bytes()
    assert storage.file_stat(str(target))[0] == source.stat().st_size
