"""Benchmark 3: a second run over unchanged data vs the first run.

Runs `stpipe ingest`, `stpipe extract` and `stpipe score`-free stages as a user would (fresh
processes) twice on the same corpus. The second extraction must decode nothing, run no CNN and
not even import TensorFlow. Target: second run <= 0.05 x the first run's wall time.

    .venv/bin/python bench/rerun.py [--image-size 224] [--videos 8] [--audios 4]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from common import extraction_corpus, header, machine, run_cli, save, settings_env


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--audios", type=int, default=4)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-rerun-"))
    source = work / "in"
    extraction_corpus(source, args.videos, args.audios)
    env = settings_env(work / "data", image_size=args.image_size)

    runs = []
    for attempt in ("first", "second"):
        ingest, _ = run_cli(["ingest", str(source)], env)
        extract, _ = run_cli(["extract"], env)
        runs.append({"ingest": ingest, "extract": extract, "total": ingest + extract})
        print(f"{attempt} run: ingest {ingest:.2f} s, extract {extract:.2f} s")
    ratio = runs[1]["total"] / runs[0]["total"]
    extract_ratio = runs[1]["extract"] / runs[0]["extract"]
    header("result")
    print(f"second / first (ingest + extract) = {ratio:.4f}   (target <= 0.05)")
    print(f"second / first (extract only)     = {extract_ratio:.4f}")
    save(
        "rerun",
        {
            "machine": machine(),
            "image_size": args.image_size,
            "clips": args.videos + args.audios,
            "first": runs[0],
            "second": runs[1],
            "ratio": ratio,
            "extract_ratio": extract_ratio,
            "target": "<= 0.05",
        },
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
