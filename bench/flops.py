"""Benchmark 6: VGG-16 throughput against the machine's measured matrix-multiply peak.

Measures large float32 (and bfloat16) matrix multiplies to get the machine's practical peak in
GFLOP/s (the best of TensorFlow and NumPy multiplies), counts VGG-16's FLOPs per frame from its
layers (2 x multiply-adds of every conv), runs the pipeline's compiled forward pass in 32-frame
batches, and reports frames/s, achieved GFLOP/s and the fraction of peak, for each precision.

    .venv/bin/python bench/flops.py [--image-size 224] [--frames 96]
"""

from __future__ import annotations

import argparse

import numpy as np
from common import header, machine, save, timer


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=96)
    args = parser.parse_args()

    from pipeline.features.cnn import build_embedder

    images = np.random.default_rng(0).integers(
        0, 256, (args.frames, args.image_size, args.image_size, 3), dtype=np.uint8
    )
    results = {}
    for precision in ("float32", "bfloat16"):
        peaks = matmul_peak(precision)
        peak = max(peaks.values())
        embedder = build_embedder("none", args.image_size, precision, 32, seed=0)
        flops = vgg16_flops(embedder.encoder)
        embedder.embed_frames(images[:32])
        with timer() as elapsed:
            embedder.embed_frames(images)
        fps = args.frames / elapsed()
        achieved = fps * flops / 1e9
        results[precision] = {
            "matmul_peaks_gflops": peaks,
            "matmul_peak_gflops": peak,
            "gflop_per_frame": flops / 1e9,
            "frames_per_second": fps,
            "achieved_gflops": achieved,
            "fraction_of_peak": achieved / peak,
        }
        header(precision)
        shown = ", ".join(f"{k}: {v:.0f}" for k, v in peaks.items())
        print(f"matrix-multiply GFLOP/s ({precision}): {shown}; peak {peak:.1f}")
        print(f"VGG-16 at {args.image_size}px: {flops / 1e9:.2f} GFLOP per frame")
        print(
            f"throughput: {fps:.2f} frames/s = {achieved:.1f} GFLOP/s = {achieved / peak:.2f} of peak"
        )
    save("flops", {"machine": machine(), "image_size": args.image_size, **results})


if __name__ == "__main__":
    main()
