"""Ingest of a hostile landing folder (tests/hostile_corpus.py), case by case.

Every entry must end as the corpus says: an ok clip, a quarantined one whose reason names the
problem (for a cost limit, the setting), or refused unopened and counted. Nothing from outside
the landing folder may be read or copied, no FIFO may block the run, and a second run over the
same corpus must change nothing.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.ingest.register import IngestSummary
from pipeline.text import printable
from pipeline.warehouse.database import Warehouse
from tests.conftest import pipeline_env
from tests.hostile_corpus import (
    BAD_MANIFEST_LABELS,
    CORPUS_SETTINGS,
    MARKUP_NAME,
    TERMINAL_NAME,
    Expected,
    outside_wav,
    write_hostile_corpus,
    write_hostile_manifest,
)
from tests.media_factory import corrupt_file, tone_file

# A FIFO opened for a blocking read would hang the run: fail instead of waiting.
pytestmark = pytest.mark.timeout(180)

#: A quarantine reason that starts like this came from the catch-all for unexpected exceptions.
_UNEXPECTED_EXCEPTION = re.compile(r"^[A-Za-z_.]*(Error|Exception): ")


@dataclass
class _Ingested:
    settings: Settings
    cases: dict[str, Expected]
    summary: IngestSummary
    outside: Path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ingested(
    request: pytest.FixtureRequest, tmp_path: Path, make_settings: Callable[..., Settings]
) -> _Ingested:
    """The hostile corpus in a landing folder, ingested once into a SQLite or a PostgreSQL
    warehouse (names that are not UTF-8 must be storable in both)."""
    database = {}
    if request.param == "postgresql":
        database["warehouse_url"] = request.getfixturevalue("postgres_url")
    settings = make_settings(landing_dir=str(tmp_path / "landing"), **CORPUS_SETTINGS, **database)
    cases = write_hostile_corpus(tmp_path / "landing", tmp_path / "outside")
    from pipeline.stages import run_ingest

    return _Ingested(settings, cases, run_ingest(settings), tmp_path / "outside")


def _tables(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """media_files and media_sources without their timestamps, in a fixed order."""
    with Warehouse.connect(settings.warehouse) as wh:
        return {
            "media_files": [
                {k: v for k, v in row.items() if k not in ("ingested_at", "updated_at")}
                for row in wh.query("SELECT * FROM media_files ORDER BY clip_id")
            ],
            "media_sources": [
                {k: v for k, v in row.items() if k not in ("first_seen_at", "last_seen_at")}
                for row in wh.query("SELECT * FROM media_sources ORDER BY uri")
            ],
        }


def _files(root: str) -> dict[str, int]:
    """Every file below ``root``: relative path -> modification time (ns)."""
    base = Path(root)
    return (
        {str(p.relative_to(base)): p.stat().st_mtime_ns for p in base.rglob("*") if p.is_file()}
        if base.is_dir()
        else {}
    )


def _unescape(stored: str) -> bytes:
    """Undo :func:`pipeline.text.printable`: ``\\\\`` is a backslash, ``\\xNN`` a byte."""
    return re.sub(
        rb"\\(\\|x[0-9a-f]{2})",
        lambda m: b"\\" if m[1] == b"\\" else bytes([int(m[1][1:], 16)]),
        stored.encode(),
    )


def _case_problems(
    case: str,
    expected: Expected,
    clips: dict[str, dict[str, Any]],
    sources: dict[str, dict[str, Any]],
    summary: IngestSummary,
    quarantine_root: str,
) -> list[str]:
    """What is wrong with how ``case`` was ingested (empty: all as expected)."""
    uri = printable(expected.path)
    source = sources.get(uri)
    mentions = [e for e in summary.errors if uri in e]
    if expected.outcome not in ("ok", "quarantined"):
        problems = [f"registered as {source}"] if source is not None else []
        if expected.outcome in ("refused", "unreadable"):
            if not any(expected.reason in e for e in mentions):
                problems.append(f"no error says why ({expected.reason!r}): {mentions}")
        elif mentions:
            problems.append(f"reported as a problem: {mentions}")
        return [f"{case}: {p}" for p in problems]
    if source is None:
        return [f"{case}: not registered (expected {expected.outcome}); errors {mentions}"]
    clip = clips[source["clip_id"]]
    problems = []
    if clip["status"] != expected.outcome:
        problems.append(f"status {clip['status']!r} (error {clip['error']!r})")
    if source["label"] != expected.label:
        problems.append(f"label {source['label']!r}, expected {expected.label!r}")
    if _unescape(uri) != os.fsencode(expected.path):
        problems.append(f"stored name {uri!r} does not map back to the file name")
    if expected.stored_name is not None and not uri.endswith("/" + expected.stored_name):
        problems.append(f"stored as {uri!r}, expected it to end in {expected.stored_name!r}")
    if expected.outcome == "quarantined":
        problems += _quarantine_problems(expected, clip, Path(quarantine_root))
    elif Path(clip["media_uri"]).read_bytes() != Path(expected.path).read_bytes():
        problems.append(f"the stored copy {clip['media_uri']} differs from the file")
    return [f"{case}: {p}" for p in problems]


def _quarantine_problems(expected: Expected, clip: dict[str, Any], quarantine: Path) -> list[str]:
    problems = []
    error = clip["error"] or ""
    if expected.reason not in error:
        problems.append(f"reason {error!r} does not mention {expected.reason!r}")
    reason_file = quarantine / f"{clip['clip_id']}.reason.txt"
    if not reason_file.is_file() or error not in reason_file.read_text(errors="replace"):
        problems.append(f"no {reason_file.name} with the reason in {quarantine}")
    if expected.copied:
        if clip["media_uri"] is None or not Path(clip["media_uri"]).is_file():
            problems.append(f"no copy kept in quarantine (media_uri {clip['media_uri']!r})")
        elif Path(clip["media_uri"]).read_bytes() != Path(expected.path).read_bytes():
            problems.append(f"the quarantined copy {clip['media_uri']} differs from the file")
    elif clip["media_uri"] is not None:
        problems.append(f"copied to {clip['media_uri']} although it must not even be read")
    return problems


def _rows_by_key(settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    tables = _tables(settings)
    clips = {row["clip_id"]: row for row in tables["media_files"]}
    sources = {row["uri"]: row for row in tables["media_sources"]}
    return clips, sources


def test_every_hostile_entry_is_ingested_quarantined_or_refused_as_expected(
    ingested: _Ingested,
) -> None:
    clips, sources = _rows_by_key(ingested.settings)
    problems = [
        problem
        for case, expected in ingested.cases.items()
        for problem in _case_problems(
            case, expected, clips, sources, ingested.summary, ingested.settings.quarantine_root
        )
    ]
    assert not problems, "\n".join(problems)


def test_summary_counts_every_refused_skipped_and_unreadable_entry(ingested: _Ingested) -> None:
    outcomes = [e.outcome for e in ingested.cases.values()]
    summary = ingested.summary
    assert summary.refused == outcomes.count("refused")
    assert summary.skipped_unsupported == outcomes.count("skipped")
    assert summary.unreadable == outcomes.count("unreadable")
    registered = outcomes.count("ok") + outcomes.count("quarantined")
    assert summary.found == registered + outcomes.count("unreadable")
    assert summary.added + summary.quarantined + summary.already_known == registered


def test_nothing_outside_the_landing_folder_is_read_or_copied(ingested: _Ingested) -> None:
    settings = ingested.settings
    clips, sources = _rows_by_key(settings)
    landing = settings.landing_root + "/"
    assert all(uri.startswith(landing) for uri in sources)
    assert all(clip["uri"].startswith(landing) for clip in clips.values())
    for secret in (Path("/etc/passwd"), outside_wav(ingested.outside)):
        assert hashlib.sha256(secret.read_bytes()).hexdigest() not in clips, secret
    # Only the copies and reasons the rows point to exist: nothing was copied for a refused
    # entry, and nothing was left half-done in staging.
    media = {
        str(Path(c["media_uri"]).relative_to(settings.media_root))
        for c in clips.values()
        if c["status"] == "ok"
    }
    assert set(_files(settings.media_root)) == media
    quarantined = [c for c in clips.values() if c["status"] == "quarantined"]
    kept = {Path(c["media_uri"]).name for c in quarantined if c["media_uri"] is not None}
    reasons = {f"{c['clip_id']}.reason.txt" for c in quarantined}
    assert set(_files(settings.quarantine_root)) == kept | reasons
    assert _files(settings.staging_root) == {}


def test_no_hostile_file_is_quarantined_by_an_unexpected_exception(ingested: _Ingested) -> None:
    """Each reason comes from a check that recognised the problem, not from the catch-all that
    keeps the batch going (which prefixes the exception type, e.g. 'AttributeError: ')."""
    clips, _ = _rows_by_key(ingested.settings)
    unexpected = {
        c["uri"]: c["error"]
        for c in clips.values()
        if c["status"] == "quarantined" and _UNEXPECTED_EXCEPTION.match(c["error"] or "")
    }
    assert not unexpected, unexpected


def test_a_second_run_over_the_hostile_corpus_changes_nothing(ingested: _Ingested) -> None:
    from pipeline.stages import run_ingest

    settings = ingested.settings
    before = (_tables(settings), _files(settings.media_root), _files(settings.quarantine_root))
    again = run_ingest(settings)
    after = (_tables(settings), _files(settings.media_root), _files(settings.quarantine_root))
    assert after == before
    assert (again.added, again.quarantined, again.refused) == (0, 0, ingested.summary.refused)
    assert again.unchanged == again.found - ingested.summary.unreadable


def _stpipe(
    settings: Settings, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    # Wide enough that rich never wraps a file name; plain output (not a terminal, no colour).
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")},
        **pipeline_env(settings),
        "COLUMNS": "1000",
        "NO_COLOR": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
    )


def test_cli_ingest_and_status_print_hostile_names_literally(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(landing_dir=str(tmp_path / "landing"), **CORPUS_SETTINGS)
    write_hostile_corpus(tmp_path / "landing", tmp_path / "outside")
    first = _stpipe(settings, "ingest")
    assert first.returncode == 0, first.stderr[-3000:]
    assert MARKUP_NAME in first.stdout + first.stderr
    status = _stpipe(settings, "status", timeout=60)
    assert status.returncode == 0, status.stderr[-3000:]
    assert MARKUP_NAME in status.stdout
    again = _stpipe(settings, "ingest")
    assert again.returncode == 0, again.stderr[-3000:]


def test_cli_output_carries_no_terminal_control_sequences_from_file_names(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """A file name may hold ESC sequences that clear the operator's screen or retitle the
    window; what the CLI prints must show them escaped, never send them to the terminal."""
    settings = make_settings(landing_dir=str(tmp_path / "landing"))
    corrupt_file(tmp_path / "landing" / TERMINAL_NAME, size=500, seed=8)
    outputs = [_stpipe(settings, "ingest"), _stpipe(settings, "status", timeout=60)]
    assert [o.returncode for o in outputs] == [0, 0], outputs[-1].stderr[-3000:]
    leaked = [
        line for o in outputs for line in (o.stdout + o.stderr).splitlines() if "\x1b" in line
    ]
    assert not leaked, leaked


def _manifest_corpus(tmp_path: Path) -> tuple[Path, dict[str, Expected]]:
    return write_hostile_manifest(tmp_path / "manifest", tmp_path / "landing", tmp_path / "outside")


def test_manifest_rows_outside_its_folder_are_refused_unread(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    from pipeline.stages import run_ingest

    settings = make_settings(landing_dir=str(tmp_path / "landing"))
    manifest, cases = _manifest_corpus(tmp_path)
    summary = run_ingest(settings, manifest=str(manifest))
    clips, sources = _rows_by_key(settings)
    problems = []
    for case, expected in cases.items():
        if expected.outcome == "refused":  # the reason names the manifest line
            if not any(expected.reason in e for e in summary.errors):
                problems.append(f"{case}: no error says {expected.reason!r}")
        else:
            problems += _case_problems(
                case, expected, clips, sources, summary, settings.quarantine_root
            )
    assert not problems, "\n".join(problems) + f"\nerrors: {summary.errors}"
    outcomes = [e.outcome for e in cases.values()]
    assert summary.refused == outcomes.count("refused")
    assert summary.skipped_unsupported == outcomes.count("skipped")
    allowed = (f"{tmp_path}/manifest/", f"{tmp_path}/landing/")
    assert all(uri.startswith(allowed) for uri in sources)
    for secret in (Path("/etc/passwd"), Path("/etc/hostname"), outside_wav(tmp_path / "outside")):
        if secret.is_file():
            assert hashlib.sha256(secret.read_bytes()).hexdigest() not in clips, secret


def test_manifest_row_for_a_file_deleted_since_is_counted_not_fatal(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    from pipeline.stages import run_ingest

    settings = make_settings(landing_dir=str(tmp_path / "landing"))
    manifest, cases = _manifest_corpus(tmp_path)
    first = run_ingest(settings, manifest=str(manifest))
    Path(cases["manifest_deleted_later"].path).unlink()
    second = run_ingest(settings, manifest=str(manifest))
    assert second.unreadable == first.unreadable + 1
    assert (second.added, second.quarantined) == (0, 0)


@pytest.mark.parametrize("label", list(BAD_MANIFEST_LABELS.values()), ids=list(BAD_MANIFEST_LABELS))
def test_manifest_with_an_invalid_label_is_refused_naming_the_line(
    tmp_path: Path, settings: Settings, label: str
) -> None:
    from pipeline.stages import run_ingest

    tone_file(tmp_path / "good.wav")  # a real file, so only the label is wrong
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label"], ["good.wav", "ok"], ["good.wav", label]])
    with pytest.raises(ConfigError, match=r"line 3: .*is not a valid label"):
        run_ingest(settings, manifest=str(manifest))
    assert _tables(settings)["media_files"] == []


def test_cli_manifest_refuses_outside_paths_and_bad_labels(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(landing_dir=str(tmp_path / "landing"))
    manifest, cases = _manifest_corpus(tmp_path)
    first = _stpipe(settings, "ingest", "--manifest", str(manifest))
    assert first.returncode == 0, first.stderr[-3000:]
    refusals = [e.reason for e in cases.values() if e.outcome == "refused"]
    assert [r for r in refusals if r not in first.stderr] == []
    Path(cases["manifest_deleted_later"].path).unlink()
    second = _stpipe(settings, "ingest", "--manifest", str(manifest))
    assert second.returncode == 0, second.stderr[-3000:]
    before = _tables(settings)
    bad = tmp_path / "manifest" / "bad_label.csv"
    with bad.open("w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label"], ["good.wav", "[/bold]"]])
    refused = _stpipe(settings, "ingest", "--manifest", str(bad))
    assert refused.returncode == 1
    assert "line 2" in refused.stderr and "[/bold]" in refused.stderr
    assert _tables(settings) == before


def test_frames_larger_than_the_header_are_not_decoded(tmp_path: Path) -> None:
    """FFmpeg's max_pixels must stop the decoder before it allocates a huge frame: probing the
    8192x8192 video and decoding the video whose frames grow mid-stream (ok at ingest: its
    header and first frame are small) may not take memory for a 67-Mpixel frame."""
    cases = write_hostile_corpus(tmp_path / "landing", tmp_path / "outside")
    # One CPU: with frame threading every decoder thread sets up tables for the frame size it
    # sees, which would make the figure depend on the machine. The kernel's high-water mark
    # of the process's memory (ru_maxrss would include the parent's at fork) is reset after
    # warming up.
    script = """
import os, sys
from pathlib import Path
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from pipeline.errors import MediaError
from pipeline.media.decode import iter_video_segments, plan_segments
from pipeline.media.probe import probe_media
def peak_mb():
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
probe_media(sys.argv[3])  # warm up: libraries loaded, one small frame decoded
Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts from here
baseline = peak_mb()
for path in sys.argv[1:3]:
    try:
        probe_media(path)
        for _ in iter_video_segments(path, plan_segments(13.0, 13.0), 13, 32):
            pass
    except MediaError as exc:
        print("refused:", exc)
print(f"growth_mb={peak_mb() - baseline:.0f}")
"""
    paths = [cases[c].path for c in ("frames_8192x8192", "frames_grow_mid_stream", "good_mp4")]
    result = subprocess.run(
        [sys.executable, "-c", script, *paths],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    growth = float(result.stdout.rsplit("growth_mb=", 1)[1])
    # One 8192x8192 frame is 96 MB in YUV 4:2:0; refusing it costs about 20 MB of tables.
    assert growth < 64, f"decoding grew the peak memory by {growth:.0f} MB:\n{result.stdout}"
