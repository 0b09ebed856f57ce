"""Benchmark 4: peak memory extracting a 10-minute video vs a 1-minute one.

Both are 640x360 H.264 at 25 fps; each is extracted by `stpipe extract` in a fresh process and
its peak resident set size is read from /usr/bin/time. Decoding streams segment by segment, so
the longer video should not need more memory. Target: peak RSS ratio <= 1.25.

    .venv/bin/python bench/memory.py [--image-size 112] [--long-minutes 10]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from common import CACHE, header, machine, run_cli, save, settings_env, write_scene_video


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--short-minutes", type=float, default=1.0)
    parser.add_argument("--long-minutes", type=float, default=10.0)
    args = parser.parse_args()

    results = {}
    for label, minutes in (("short", args.short_minutes), ("long", args.long_minutes)):
        video = write_scene_video(
            CACHE / f"scene_{minutes:g}min.mp4", minutes * 60, audio=True, seed=int(minutes * 10)
        )
        work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
        (work / "in").mkdir()
        shutil.copy(video, work / "in" / video.name)
        env = settings_env(work / "data", image_size=args.image_size)
        run_cli(["ingest", str(work / "in")], env)
        seconds, peak_mib = run_cli(["extract"], env)
        results[label] = {
            "minutes": minutes,
            "seconds": seconds,
            "peak_rss_mib": peak_mib,
            "bytes": video.stat().st_size,
        }
        print(
            f"{label}: {minutes:g} min video ({video.stat().st_size / 1e6:.0f} MB): peak RSS {peak_mib} MiB, {seconds:.1f} s"
        )
        shutil.rmtree(work, ignore_errors=True)
    ratio = results["long"]["peak_rss_mib"] / results["short"]["peak_rss_mib"]
    header("result")
    print(f"peak RSS long / short = {ratio:.3f}   (target <= 1.25)")
    save(
        "memory",
        {
            "machine": machine(),
            "image_size": args.image_size,
            **results,
            "ratio": ratio,
            "target": "<= 1.25",
        },
    )


if __name__ == "__main__":
    main()
