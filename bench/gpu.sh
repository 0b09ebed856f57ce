#!/usr/bin/env bash
# Extraction frames/s on an NVIDIA GPU, float32 and bfloat16, with the same scripts as the CPU
# figures in docs/benchmarks.md. One short run on the first GPU machine fills the GPU rows.
#
#   bench/gpu.sh [OUT_DIR]        (default: bench/results/gpu)
#
# 1. installs the project with the `gpu` extra (TensorFlow's CUDA 12 / cuDNN wheels) into .venv,
#    from uv.lock; this needs the package registry (or a wheel cache: UV_FIND_LINKS / UV_CACHE_DIR);
# 2. checks that TensorFlow sees the GPU (and says why not, e.g. driver too old for CUDA 12.3);
# 3. bench/flops.py: matmul peak and VGG-16 frames/s at batch 32, 64, 128 in both precisions;
# 4. bench/extraction_vs_bare.py: the pipeline vs the bare forward pass, video and audio, both
#    precisions, with more decoding threads (the GPU leaves the CPU to decoding);
# and copies the JSON results and logs to OUT_DIR. About 5 minutes on an H100/H200 once
# installed.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/results/gpu}
mkdir -p "$OUT"
export UV_PROJECT_ENVIRONMENT=.venv UV_PYTHON_DOWNLOADS=never TF_CPP_MIN_LOG_LEVEL=3
PYTHON=${PYTHON:-python3.11}

if ! command -v nvidia-smi >/dev/null; then
    echo "gpu.sh: no nvidia-smi here: this script measures an NVIDIA GPU" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/nvidia-smi.csv"

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import nvidia.cudnn" 2>/dev/null; then
    UV="uv"
    command -v uv >/dev/null || { "$PYTHON" -m pip install --quiet "uv==0.13.9"; UV="$PYTHON -m uv"; }
    $UV sync --frozen --extra gpu --python "$PYTHON"
fi

.venv/bin/python - <<'PY' | tee "$OUT/devices.txt"
import sys
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print("TensorFlow", tf.__version__, "built with CUDA", tf.sysconfig.get_build_info().get("cuda_version"))
print("GPUs:", [d.name for d in gpus])
if not gpus:
    sys.exit("gpu.sh: TensorFlow sees no GPU (driver older than CUDA 12.3 needs, or CUDA_VISIBLE_DEVICES empty)")
PY

cd bench
../.venv/bin/python -u flops.py --no-verbose --batch-sizes 32,64,128 --frames 512 2>&1 | tee "../$OUT/flops.log"
PIPELINE_DECODE_WORKERS=${PIPELINE_DECODE_WORKERS:-8} \
    ../.venv/bin/python -u extraction_vs_bare.py --videos 32 --audios 16 --repeats 2 2>&1 \
    | tee "../$OUT/extraction_vs_bare.log"
cd ..
cp bench/results/flops.json "$OUT/flops.json"
cp bench/results/extraction_vs_bare.json "$OUT/extraction_vs_bare.json"
echo "gpu.sh: results in $OUT"
