"""Benchmark 6: VGG-16 throughput against the machine's measured matrix-multiply peak.

For float32 and bfloat16 (Keras mixed_bfloat16), on the same machine in one run:

1. the instruction set: the CPU's (``/proc/cpuinfo``, capped by ``ONEDNN_MAX_CPU_ISA``) and the
   kernels oneDNN really ran for VGG-16's convolutions and matrix multiplies, with the number of
   reorders (layout conversions) per forward pass, from ``ONEDNN_VERBOSE`` in a subprocess;
2. the practical peak: the best GFLOP/s of large square ``tf.matmul`` (2 n^3 operations) at
   n = 2048 and 4096 (and NumPy/OpenBLAS for float32);
3. VGG-16's FLOPs per frame (2 x multiply-adds of every convolution) and the pipeline's own
   compiled forward pass at each batch size (and with XLA if asked): frames/s, GFLOP/s and the
   fraction of the peak. Targets: >= 0.8 of the peak in float32, >= 0.7 in bfloat16.

    .venv/bin/python bench/flops.py [--image-size 224] [--frames 96] [--batch-sizes 16,32,64]
        [--xla] [--inter-op N] [--intra-op N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from common import header, machine, save, timer

TARGETS = {"float32": 0.8, "bfloat16": 0.7}


def vgg16_flops(encoder) -> float:  # type: ignore[no-untyped-def]
    """FLOPs of one forward pass of one frame: 2 x multiply-adds of every Conv2D layer."""
    from pipeline.tfenv import keras

    total = 0.0
    vgg = encoder.get_layer("vgg16")
    for layer in vgg.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, rows, cols, out_channels = layer.output.shape
            kernel_rows, kernel_cols, in_channels, _ = layer.kernel.shape
            total += 2.0 * rows * cols * out_channels * kernel_rows * kernel_cols * in_channels
    return total


def matmul_peak(dtype: str, repeats: int = 5) -> dict[str, float]:
    """Best GFLOP/s of square matrix multiplies (2 n^3 operations), per method: TensorFlow
    (oneDNN) at n = 2048 and 4096, and for float32 also NumPy (OpenBLAS) at n = 4096."""
    from pipeline.tfenv import tf

    results: dict[str, float] = {}
    for size in (2048, 4096):
        a = tf.random.normal((size, size), dtype=tf.float32)
        b = tf.random.normal((size, size), dtype=tf.float32)
        if dtype == "bfloat16":
            a, b = tf.cast(a, tf.bfloat16), tf.cast(b, tf.bfloat16)
        matmul = tf.function(lambda x, y: tf.matmul(x, y))
        matmul(a, b).numpy()
        best = float("inf")
        for _ in range(repeats):
            with timer() as elapsed:
                matmul(a, b).numpy()
            best = min(best, elapsed())
        results[f"tensorflow {size}"] = 2.0 * size**3 / best / 1e9
    if dtype == "float32":
        x = np.random.default_rng(0).standard_normal((4096, 4096), dtype=np.float32)
        x @ x
        best = float("inf")
        for _ in range(repeats):
            with timer() as elapsed:
                x @ x
            best = min(best, elapsed())
        results["numpy 4096"] = 2.0 * 4096**3 / best / 1e9
    return results


def onednn_kernels(precision: str, image_size: int = 64) -> dict[str, object]:
    """Run one VGG-16 forward pass with ``ONEDNN_VERBOSE=1`` in a subprocess and count what
    oneDNN executed: implementation per primitive kind, and reorders."""
    code = (
        "import numpy as np\n"
        "from pipeline.features.cnn import build_embedder\n"
        f"e = build_embedder('none', {image_size}, {precision!r}, 4, seed=0)\n"
        "import sys; print('=== measured pass ===', flush=True); sys.stdout.flush()\n"
        f"e.embed_frames(np.zeros((4, {image_size}, {image_size}, 3), np.uint8))\n"
    )
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        check=False,
    )
    lines = result.stdout.split("=== measured pass ===", 1)[-1].splitlines()
    kinds: Counter[str] = Counter()
    isa_line = next((line for line in result.stdout.splitlines() if ",info,cpu,isa:" in line), "")
    for line in lines:
        fields = line.split(",")
        if len(fields) > 6 and fields[0] == "onednn_verbose" and "exec" in fields:
            at = fields.index("exec")
            kind, impl = fields[at + 2], fields[at + 3]
            kinds[f"{kind} {impl}"] += 1
    return {
        "isa": isa_line.split("isa:", 1)[-1].strip() if isa_line else "unknown",
        "executed": dict(kinds.most_common()),
        "reorders": sum(n for k, n in kinds.items() if k.startswith("reorder")),
        "exit": result.returncode,
    }


def vgg16_throughput(
    precision: str, image_size: int, frames: int, batch_size: int, xla: bool
) -> tuple[float, float]:
    """(frames/s, GFLOP per frame) of the pipeline's compiled forward pass."""
    from pipeline.features.cnn import FrameEmbedder, build_embedder
    from pipeline.tfenv import tf

    embedder = build_embedder("none", image_size, precision, batch_size, seed=0)
    if xla:
        encoder = embedder.encoder
        embedder = FrameEmbedder(encoder, batch_size)
        embedder._forward = tf.function(  # the same pass, compiled by XLA
            lambda x: encoder(x, training=False), jit_compile=True
        )
    frames = -(-frames // batch_size) * batch_size  # whole batches: no padding is timed
    images = np.random.default_rng(0).integers(
        0, 256, (frames, image_size, image_size, 3), dtype=np.uint8
    )
    embedder.embed_frames(images[:batch_size])
    with timer() as elapsed:
        embedder.embed_frames(images)
    return frames / elapsed(), vgg16_flops(embedder.encoder)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=96, help="frames per timed pass")
    parser.add_argument("--batch-sizes", default="32", help="comma-separated, e.g. 16,32,64")
    parser.add_argument("--xla", action="store_true", help="also time the XLA-compiled pass")
    parser.add_argument("--inter-op", type=int, help="TensorFlow inter-op threads")
    parser.add_argument("--intra-op", type=int, help="TensorFlow intra-op threads")
    parser.add_argument("--no-verbose", action="store_true", help="skip the oneDNN kernel census")
    args = parser.parse_args()

    from pipeline.hardware import cpu_features
    from pipeline.tfenv import tf

    if args.inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
    if args.intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op)
    host = cpu_features()
    header("machine")
    print(host.describe())
    print(
        f"TensorFlow threads: inter-op {tf.config.threading.get_inter_op_parallelism_threads()}, "
        f"intra-op {tf.config.threading.get_intra_op_parallelism_threads()} (0 = one per core)"
    )
    results: dict[str, object] = {}
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    for precision in ("float32", "bfloat16"):
        header(precision)
        kernels = None if args.no_verbose else onednn_kernels(precision)
        if kernels:
            print(f"oneDNN ISA: {kernels['isa']}")
            for name, count in list(kernels["executed"].items())[:8]:  # type: ignore[union-attr]
                print(f"  {count:3d} x {name}")
            print(f"  reorders per forward pass: {kernels['reorders']}")
        peaks = matmul_peak(precision)
        peak = max(peaks.values())
        shown = ", ".join(f"{k}: {v:.0f}" for k, v in peaks.items())
        print(f"matrix-multiply GFLOP/s: {shown}; peak {peak:.1f}")
        runs = {}
        for batch in batch_sizes:
            for xla in (False, True) if args.xla else (False,):
                label = f"batch {batch}" + (" xla" if xla else "")
                try:
                    fps, flops = vgg16_throughput(
                        precision, args.image_size, args.frames, batch, xla
                    )
                except Exception as exc:  # XLA may not compile a dtype on a CPU
                    print(f"{label}: failed ({type(exc).__name__}: {str(exc)[:200]})")
                    continue
                achieved = fps * flops / 1e9
                runs[label] = {
                    "frames_per_second": fps,
                    "achieved_gflops": achieved,
                    "fraction_of_peak": achieved / peak,
                }
                print(
                    f"VGG-16 {args.image_size}px {label}: {fps:.2f} frames/s = {achieved:.1f} "
                    f"GFLOP/s = {achieved / peak:.2f} of peak ({flops / 1e9:.2f} GFLOP per frame)"
                )
        best = max(runs, key=lambda k: runs[k]["frames_per_second"])
        fraction = runs[best]["fraction_of_peak"]
        print(
            f"best: {best}, {fraction:.2f} of peak "
            f"(target >= {TARGETS[precision]}: {'met' if fraction >= TARGETS[precision] else 'NOT met'})"
        )
        results[precision] = {
            "onednn": kernels,
            "matmul_peaks_gflops": peaks,
            "matmul_peak_gflops": peak,
            "gflop_per_frame": flops / 1e9,
            "runs": runs,
            "best": best,
            "frames_per_second": runs[best]["frames_per_second"],
            "fraction_of_peak": fraction,
            "target": TARGETS[precision],
        }
    save(
        "flops",
        {
            "machine": machine(),
            "host": host.describe(),
            "isa": host.isa,
            "threads": {"inter_op": args.inter_op, "intra_op": args.intra_op},
            "image_size": args.image_size,
            **results,
        },
    )
    print(json.dumps({p: round(results[p]["fraction_of_peak"], 3) for p in TARGETS}))  # type: ignore[index]


if __name__ == "__main__":
    main()
