from __future__ import annotations

import os
import secrets
import shutil
from collections import Counter
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.ingest.register import discover_media, split_for
from pipeline.stages import run_ingest
from pipeline.warehouse.database import Warehouse
from tests.media_factory import corrupt_file, gray_ramp_video, tone_file


def _rows(settings: Settings) -> list[dict]:
    with Warehouse.connect(settings.warehouse) as wh:
        return wh.query("SELECT * FROM media_files ORDER BY uri")


def test_discover_media_reads_labels_from_folders(tmp_path: Path) -> None:
    for rel in ("cat/a.mp4", "cat/sub/b.wav", "dog/c.flac", "loose.ogg", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = discover_media(str(tmp_path), labelled=True)
    assert {(Path(c.uri).name, c.label) for c in found.candidates} == {
        ("a.mp4", "cat"),
        ("b.wav", "cat"),
        ("c.flac", "dog"),
        ("loose.ogg", None),
    }
    assert found.unsupported == 1
    unlabelled = discover_media(str(tmp_path), labelled=False)
    assert {c.label for c in unlabelled.candidates} == {None}


def test_landing_layout_labels_only_files_under_labelled(tmp_path: Path) -> None:
    for rel in ("labelled/cat/a.mp4", "labelled/b.mp4", "inbox/cat/c.mp4", "d.wav"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = discover_media(str(tmp_path), labelled=False, landing_layout=True)
    assert {Path(c.uri).name: c.label for c in found.candidates} == {
        "a.mp4": "cat",
        "b.mp4": None,
        "c.mp4": None,
        "d.wav": None,
    }


def test_split_is_deterministic_and_about_80_10_10() -> None:
    ids = [secrets.token_hex(32) for _ in range(4000)]
    splits = Counter(split_for(i) for i in ids)
    assert splits["train"] / 4000 == pytest.approx(0.8, abs=0.03)
    assert splits["val"] / 4000 == pytest.approx(0.1, abs=0.02)
    assert all(split_for(i) == split_for(i) for i in ids[:50])


def test_ingest_registers_probes_and_copies(tmp_path: Path, settings: Settings) -> None:
    source = tmp_path / "in"
    gray_ramp_video(source / "ramps" / "r.mp4")
    tone_file(source / "tones" / "t.wav", seconds=1.5, sample_rate=22050)
    summary = run_ingest(settings, str(source), labelled=True)
    assert (summary.found, summary.added, summary.quarantined) == (2, 2, 0)
    rows = {Path(r["uri"]).name: r for r in _rows(settings)}
    video, audio = rows["r.mp4"], rows["t.wav"]
    assert (video["modality"], video["label"], video["status"], video["width"]) == (
        "video",
        "ramps",
        "ok",
        64,
    )
    assert (audio["modality"], audio["label"], audio["sample_rate"]) == ("audio", "tones", 22050)
    assert audio["duration_seconds"] == pytest.approx(1.5, abs=0.05)
    for row in rows.values():
        assert len(row["clip_id"]) == 64 and row["split"] in ("train", "val", "test")
        stored = Path(row["media_uri"])
        assert stored.read_bytes() == Path(row["uri"]).read_bytes()
        assert stored.name.startswith(row["clip_id"]) and stored.is_relative_to(settings.media_root)


def test_same_content_twice_is_one_clip_and_a_rerun_adds_nothing(
    tmp_path: Path, settings: Settings
) -> None:
    source = tmp_path / "in"
    original = gray_ramp_video(source / "a" / "one.mp4")
    shutil.copy(original, source / "a" / "copy_of_one.mp4")
    first = run_ingest(settings, str(source), labelled=True)
    assert (first.found, first.added, first.already_known) == (2, 1, 1)
    before = _rows(settings)
    second = run_ingest(settings, str(source), labelled=True)
    assert (second.added, second.unchanged) == (0, 2)
    assert _rows(settings) == before


def test_touched_file_is_rehashed_but_adds_nothing(tmp_path: Path, settings: Settings) -> None:
    path = gray_ramp_video(tmp_path / "in" / "a.mp4")
    run_ingest(settings, str(tmp_path / "in"))
    os.utime(path, (1_000_000_000, 1_000_000_000))
    again = run_ingest(settings, str(tmp_path / "in"))
    assert (again.unchanged, again.already_known, again.added) == (0, 1, 0)


def test_bad_files_are_quarantined_with_reason_and_the_batch_goes_on(
    tmp_path: Path, settings: Settings
) -> None:
    source = tmp_path / "in"
    gray_ramp_video(source / "good.mp4")
    corrupt_file(source / "broken.mp4")
    (source / "empty.wav").write_bytes(b"")
    tone_file(source / "fine.flac")
    summary = run_ingest(settings, str(source))
    assert (summary.added, summary.quarantined) == (2, 2)
    rows = {Path(r["uri"]).name: r for r in _rows(settings)}
    assert rows["good.mp4"]["status"] == rows["fine.flac"]["status"] == "ok"
    for name in ("broken.mp4", "empty.wav"):
        row = rows[name]
        assert row["status"] == "quarantined"
        assert name in row["error"] or "empty" in row["error"]
        quarantined = Path(row["media_uri"])
        assert quarantined.parent == Path(settings.quarantine_root)
        reason = (quarantined.parent / f"{row['clip_id']}.reason.txt").read_text()
        assert row["error"] in reason
    assert "Invalid data" in rows["broken.mp4"]["error"]
    assert "0 bytes" in rows["empty.wav"]["error"]


def test_label_arrives_later_for_known_content(tmp_path: Path, settings: Settings) -> None:
    path = tone_file(tmp_path / "inbox" / "x.wav")
    run_ingest(settings, str(tmp_path / "inbox"))
    (tmp_path / "labelled" / "beep").mkdir(parents=True)
    shutil.copy(path, tmp_path / "labelled" / "beep" / "x.wav")
    summary = run_ingest(settings, str(tmp_path / "labelled"), labelled=True)
    assert (summary.added, summary.labelled_now) == (0, 1)
    [row] = _rows(settings)
    assert row["label"] == "beep"
    shutil.copy(path, tmp_path / "labelled" / "boop.wav")
    (tmp_path / "labelled" / "boop").mkdir()
    shutil.move(tmp_path / "labelled" / "boop.wav", tmp_path / "labelled" / "boop" / "x.wav")
    conflict = run_ingest(settings, str(tmp_path / "labelled"), labelled=True)
    assert conflict.label_conflicts == 1
    assert _rows(settings)[0]["label"] == "beep"  # never silently relabelled


def test_landing_folder_is_the_default_source(settings: Settings) -> None:
    landing = Path(settings.landing_root)
    tone_file(landing / "labelled" / "beep" / "a.wav")
    tone_file(landing / "new" / "b.wav", freq=880)
    summary = run_ingest(settings)
    assert summary.added == 2
    labels = {Path(r["uri"]).name: r["label"] for r in _rows(settings)}
    assert labels == {"a.wav": "beep", "b.wav": None}


def test_missing_source_folder_is_a_clear_error(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        run_ingest(settings, str(tmp_path / "nowhere"))


def test_manifest_sets_labels_and_splits_and_can_move_clips(
    tmp_path: Path, settings: Settings
) -> None:
    a = tone_file(tmp_path / "m" / "audio" / "a.wav")
    tone_file(tmp_path / "m" / "audio" / "b.wav", freq=600)
    gray_ramp_video(tmp_path / "m" / "c.mp4")
    manifest = tmp_path / "m" / "manifest.csv"
    manifest.write_text(
        "path,label,split\naudio/a.wav,low,test\naudio/b.wav,high,train\nc.mp4,,val\n"
    )
    summary = run_ingest(settings, manifest=str(manifest))
    assert summary.added == 3
    rows = {Path(r["uri"]).name: r for r in _rows(settings)}
    assert (rows["a.wav"]["label"], rows["a.wav"]["split"]) == ("low", "test")
    assert (rows["b.wav"]["label"], rows["b.wav"]["split"]) == ("high", "train")
    assert (rows["c.mp4"]["label"], rows["c.mp4"]["split"]) == (None, "val")
    assert run_ingest(settings, manifest=str(manifest)).unchanged == 3
    manifest.write_text(f"path,label,split\n{a},low,train\n")  # absolute paths work too
    moved = run_ingest(settings, manifest=str(manifest))
    assert moved.split_changed == 1
    assert {Path(r["uri"]).name: r["split"] for r in _rows(settings)}["a.wav"] == "train"


def test_bad_manifest_is_a_clear_error(tmp_path: Path, settings: Settings) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,split\nx.wav,holdout\n")
    with pytest.raises(ConfigError, match="line 2: split 'holdout'"):
        run_ingest(settings, manifest=str(manifest))
    manifest.write_text("file,label\nx.wav,a\n")
    with pytest.raises(ConfigError, match="'path' column"):
        run_ingest(settings, manifest=str(manifest))


def test_a_file_whose_probe_raises_anything_is_quarantined_and_the_batch_goes_on(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection: probing one file raises an exception nothing expects.
    import pipeline.media.probe

    source = tmp_path / "in"
    gray_ramp_video(source / "good.mp4")
    tone_file(source / "odd.wav")
    tone_file(source / "fine.flac", freq=660)
    real = pipeline.media.probe.probe_media

    def flaky(uri: str, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        if str(kwargs.get("name", "")).endswith("odd.wav"):
            raise IndexError("list index out of range")
        return real(uri, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline.media.probe, "probe_media", flaky)
    summary = run_ingest(settings, str(source))
    assert (summary.added, summary.quarantined) == (2, 1)
    rows = {Path(r["uri"]).name: r for r in _rows(settings)}
    assert rows["odd.wav"]["status"] == "quarantined"
    assert rows["odd.wav"]["error"] == "IndexError: list index out of range"
    assert rows["good.mp4"]["status"] == rows["fine.flac"]["status"] == "ok"
