"""When does audio-video fusion help? Video-only vs audio-only vs two-branch heads.

Corpus (built from the demo's generators): videos with an audio track; the picture shows the
demo colours forward or reversed, the soundtrack plays the demo notes rising or falling, on the
same timeline. Four classes, one per combination (`forward_rising`, `forward_falling`,
`reverse_rising`, `reverse_falling`): the picture alone can only tell half of it, the sound alone
the other half, so a single-stream head tops out near 0.5 and only the fused head can reach 1.
A second corpus makes the soundtrack random (uninformative) with two picture classes: fusion
then should neither help nor hurt.

    .venv/bin/python bench/fusion.py [--image-size 48] [--clips-per-class 60]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
from common import header, machine, save


def write_clip(
    path: Path, colours_forward: bool, tones_rising: bool, rng: np.random.Generator
) -> None:
    from pipeline.media.synthetic import (
        DEMO_COLOURS,
        DEMO_NOTE_RATIOS,
        colour_sequence_frames,
        tone_sequence,
        write_video,
    )

    fps, rate = 10, 16000
    colours = list(DEMO_COLOURS) if colours_forward else list(DEMO_COLOURS)[::-1]
    seconds_each = [float(rng.uniform(0.4, 0.7)) for _ in colours]
    frames = colour_sequence_frames(
        colours, [max(2, round(s * fps)) for s in seconds_each], 48, 64, rng
    )
    base = rng.uniform(250, 500)
    freqs = [base * r for r in (DEMO_NOTE_RATIOS if tones_rising else DEMO_NOTE_RATIOS[::-1])]
    samples = tone_sequence(freqs, [frames.shape[0] / fps / len(freqs)] * len(freqs), rate, rng)
    write_video(path, frames, fps, audio=(samples, rate))


def run_corpus(
    name: str, classes: dict[str, tuple[bool, bool | None]], args: argparse.Namespace
) -> dict[str, float]:
    from pipeline.config import load_settings
    from pipeline.stages import run_extract, run_ingest, run_train
    from pipeline.training.params import TrainParams

    work = Path(tempfile.mkdtemp(prefix=f"bench-fusion-{name}-"))
    rng = np.random.default_rng(0)
    for label, (forward, rising) in classes.items():
        for i in range(args.clips_per_class):
            tone = bool(rng.integers(2)) if rising is None else rising
            write_clip(work / "in" / label / f"{i:03d}.mp4", forward, tone, rng)
    settings = load_settings(
        data_dir=str(work / "data"), cnn_weights="none", image_size=args.image_size
    )
    run_ingest(settings, str(work / "in"), labelled=True)
    run_extract(settings)
    accuracy = {}
    for streams in ("video", "audio", "both"):
        result = run_train(
            settings, TrainParams(epochs=40, patience=8, streams=streams), promote=False
        )
        accuracy[streams] = result.metrics["accuracy"]
        print(
            f"{name}: {streams:5s} head -> test accuracy {accuracy[streams]:.3f} on {result.metrics['examples']} clips"
        )
    shutil.rmtree(work, ignore_errors=True)
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--clips-per-class", type=int, default=60)
    args = parser.parse_args()
    header("complementary streams: the class needs both picture and sound")
    complementary = run_corpus(
        "complementary",
        {
            "forward_rising": (True, True),
            "forward_falling": (True, False),
            "reverse_rising": (False, True),
            "reverse_falling": (False, False),
        },
        args,
    )
    header("uninformative soundtrack: the class is in the picture only")
    picture_only = run_corpus(
        "picture_only", {"forward": (True, None), "reverse": (False, None)}, args
    )
    save(
        "fusion",
        {
            "machine": machine(),
            "image_size": args.image_size,
            "clips_per_class": args.clips_per_class,
            "complementary": complementary,
            "picture_only": picture_only,
        },
    )


if __name__ == "__main__":
    main()
