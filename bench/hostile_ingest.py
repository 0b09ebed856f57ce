"""Benchmark: ingesting a hostile landing folder vs one of ordinary files, side by side.

The hostile corpus is the one the ingest tests use (tests/hostile_corpus.py): 8192x8192
frames, 1 Hz and 2 GHz audio, a thousand streams, days of claimed duration in a kilobyte, a
sparse file far over the size limit, links out of the folder, FIFOs, sockets, devices, names
that are not UTF-8 or hold newlines and markup, folders that are not labels. The ordinary
corpus has as many tiny good files. Each is ingested into a fresh data dir in this process
(`run_ingest`, the function behind `stpipe ingest`), one file at a time so that each file's
time is its own; the rounds alternate between the two corpora. Target: every hostile file
takes under a second, and the hostile folder costs no more than a few times the ordinary one.

    .venv/bin/python bench/hostile_ingest.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import header, machine, save, timer

if TYPE_CHECKING:
    from tests.hostile_corpus import Expected

BOUND_SECONDS = 1.0


class FileClock:
    """A :class:`pipeline.progress.Progress` noting when each file is done."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def start(self, description: str, total: int, unit: str = "items") -> None:
        self.marks = [time.perf_counter()]

    def advance(self, items: int = 1, frames: int = 0) -> None:
        self.marks.append(time.perf_counter())

    def finish(self) -> None:
        pass

    def durations(self) -> list[float]:
        return [end - start for start, end in zip(self.marks, self.marks[1:], strict=False)]


def write_ordinary_corpus(root: Path, count: int) -> None:
    """``count`` tiny good files like the hostile corpus's own: quarter-second tones (WAV) and
    eight-frame colour videos (MP4), every one with different content."""
    from tests.media_factory import colour_video, tone_file

    for i in range(count):
        if i % 4 == 3:
            shade = (i * 7) % 256
            colour_video(root / "videos" / f"v{i:03d}.mp4", [(shade, 255 - shade, 90)], 2, 4)
        else:
            tone_file(root / "tones" / f"t{i:03d}.wav", 0.25, 150.0 + 11.0 * i, 8000)


def ingest_timed(landing: Path, data: Path) -> tuple[float, dict[str, float], dict[str, Any]]:
    """Ingest ``landing`` into a fresh ``data`` dir, one file at a time. Returns the wall time,
    the seconds each examined file took (by its stored name) and the summary."""
    from pipeline.config import load_settings
    from pipeline.ingest.register import discover_media
    from pipeline.stages import run_ingest
    from tests.hostile_corpus import CORPUS_SETTINGS

    settings = load_settings(
        data_dir=str(data),
        landing_dir=str(landing),
        cnn_weights="none",
        ingest_workers=1,
        **CORPUS_SETTINGS,
    )
    found = discover_media(str(landing), labelled=False, landing_layout=True)
    names = [candidate.name for candidate in found.candidates]
    clock = FileClock()
    with timer() as elapsed:
        summary = run_ingest(settings, progress=clock)
    durations = clock.durations()
    if len(durations) != len(names):
        raise RuntimeError(f"timed {len(durations)} files, expected {len(names)}")
    return elapsed(), dict(zip(names, durations, strict=True)), summary.as_dict()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("pipeline").setLevel(logging.ERROR)  # not a warning per quarantined file
    from tests.hostile_corpus import write_hostile_corpus

    work = Path(tempfile.mkdtemp(prefix="bench-hostile-"))
    with timer() as generating:
        cases = write_hostile_corpus(work / "hostile", work / "outside")
    hostile_seconds = generating()
    with timer() as generating:
        write_ordinary_corpus(work / "ordinary", len(cases))
    ordinary_seconds = generating()
    header("hostile ingest")
    facts = machine()
    print(f"cpu: {facts['cpu']} ({facts['cores']} cores)")
    print(f"hostile corpus: {len(cases)} entries, generated in {hostile_seconds:.2f} s")
    print(f"ordinary corpus: {len(cases)} files, generated in {ordinary_seconds:.2f} s")

    ingest_timed(work / "ordinary", work / "warm-up")  # load PyAV, SQLAlchemy, ... once
    totals: dict[str, list[float]] = {"hostile": [], "ordinary": []}
    per_file: dict[str, dict[str, list[float]]] = {"hostile": {}, "ordinary": {}}
    summaries: dict[str, dict[str, Any]] = {}
    for round_ in range(args.rounds):
        for corpus in ("hostile", "ordinary"):
            seconds, files, summaries[corpus] = ingest_timed(
                work / corpus, work / f"data-{corpus}-{round_}"
            )
            totals[corpus].append(seconds)
            for name, took in files.items():
                per_file[corpus].setdefault(name, []).append(took)

    rows = case_rows(cases, per_file["hostile"])
    print(f"\n{'case':<36} {'outcome':<12} {'ms (median)':>11} {'ms (max)':>9}")
    for row in rows:
        if row["median_ms"] is None:
            print(f"{row['case']:<36} {row['outcome']:<12} {'not opened':>11}")
        else:
            print(
                f"{row['case']:<36} {row['outcome']:<12} "
                f"{row['median_ms']:>11.1f} {row['max_ms']:>9.1f}"
            )

    timed = [r for r in rows if r["max_ms"] is not None]
    slowest = max(timed, key=lambda r: r["max_ms"])
    ordinary_files = [t for times in per_file["ordinary"].values() for t in times]
    hostile_total = statistics.median(totals["hostile"])
    ordinary_total = statistics.median(totals["ordinary"])
    ratio = hostile_total / ordinary_total
    bounded = slowest["max_ms"] < BOUND_SECONDS * 1000
    header("result")
    print(
        f"hostile:  {hostile_total:.3f} s for {len(cases)} entries "
        f"({1000 * hostile_total / len(cases):.1f} ms per entry; median of {args.rounds})"
    )
    print(
        f"ordinary: {ordinary_total:.3f} s for {len(cases)} files "
        f"({1000 * ordinary_total / len(cases):.1f} ms per file; "
        f"slowest file {1000 * max(ordinary_files):.1f} ms)"
    )
    print(f"hostile / ordinary = {ratio:.2f}")
    print(
        f"slowest hostile file: {slowest['case']} ({slowest['outcome']}) {slowest['max_ms']:.1f} ms"
    )
    print(
        f"every hostile file under {BOUND_SECONDS:g} s: {'yes' if bounded else 'NO'}   "
        f"(target: yes)"
    )
    counts = {k: v for k, v in summaries["hostile"].items() if k != "errors"}
    print(f"hostile summary: {counts}")
    save(
        "hostile_ingest",
        {
            "machine": facts,
            "rounds": args.rounds,
            "entries": len(cases),
            "hostile_total_s": hostile_total,
            "ordinary_total_s": ordinary_total,
            "ratio": ratio,
            "slowest": slowest,
            "bounded": bounded,
            "bound_s": BOUND_SECONDS,
            "cases": rows,
            "summary": summaries["hostile"],
            "target": f"every hostile file < {BOUND_SECONDS:g} s",
        },
    )
    shutil.rmtree(work, ignore_errors=True)


def case_rows(cases: dict[str, Expected], times: dict[str, list[float]]) -> list[dict[str, Any]]:
    """One row per case, slowest first: its outcome and its file's median and worst time (None
    when the file was refused or skipped at discovery, never opened). ``times`` is keyed by
    stored name."""
    from pipeline.text import printable

    rows = []
    for case, expected in cases.items():
        took = times.get(printable(expected.path), [])
        rows.append(
            {
                "case": case,
                "outcome": expected.outcome,
                "median_ms": 1000 * statistics.median(took) if took else None,
                "max_ms": 1000 * max(took) if took else None,
            }
        )
    return sorted(rows, key=lambda r: -(r["max_ms"] or -1.0))


if __name__ == "__main__":
    main()
