"""What the host can run fast: the CPU's instruction set as oneDNN names it, and NVIDIA GPUs.

Read from ``/proc`` without importing TensorFlow (the settings and ``stpipe settings`` use it).
``ONEDNN_MAX_CPU_ISA``, oneDNN's own cap on the instructions it may use, is honoured: a host
capped below ``AVX512_CORE_BF16`` does not run bfloat16 natively, whatever its CPU.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

#: oneDNN's CPU instruction sets, weakest first, with the ``/proc/cpuinfo`` flags each needs.
ISA_LEVELS: tuple[tuple[str, frozenset[str]], ...] = (
    ("sse41", frozenset({"sse4_1"})),
    ("avx", frozenset({"avx"})),
    ("avx2", frozenset({"avx2", "fma"})),
    ("avx512_core", frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq"})),
    ("avx512_core_vnni", frozenset({"avx512_vnni"})),
    ("avx512_core_bf16", frozenset({"avx512_bf16"})),
    ("avx512_core_amx", frozenset({"amx_bf16", "amx_tile"})),
)
_ISA_NAMES = [name for name, _ in ISA_LEVELS]
#: The weakest instruction set with native bfloat16 arithmetic.
BF16_ISA = "avx512_core_bf16"
_NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


@dataclass(frozen=True)
class CpuFeatures:
    """The host's compute capabilities.

    Attributes:
        cpu: the CPU's model name.
        cores: logical cores this process may use.
        detected_isa: the strongest oneDNN instruction set the CPU has.
        isa: the one oneDNN may use (``detected_isa``, capped by ``ONEDNN_MAX_CPU_ISA``).
        gpus: NVIDIA GPUs the driver lists (all have bfloat16 from Ampere on).
    """

    cpu: str
    cores: int
    detected_isa: str
    isa: str
    gpus: int

    @property
    def bf16_native(self) -> bool:
        """Whether bfloat16 runs in hardware here (AVX512-BF16, AMX or an NVIDIA GPU)."""
        return self.gpus > 0 or _ISA_NAMES.index(self.isa) >= _ISA_NAMES.index(BF16_ISA)

    def describe(self) -> str:
        capped = f" (capped from {self.detected_isa})" if self.isa != self.detected_isa else ""
        gpu = f", {self.gpus} NVIDIA GPU(s)" if self.gpus else ""
        native = "native" if self.bf16_native else "emulated (slow)"
        return f"{self.cpu}, {self.cores} cores, {self.isa}{capped}{gpu}; bfloat16 {native}"


def onednn_runs_bf16(features: CpuFeatures) -> bool:
    """Whether TensorFlow can run bfloat16 convolutions on this CPU as configured: oneDNN has
    them from AVX-512 on (natively from AVX512-BF16, emulated below); with oneDNN off
    (``TF_ENABLE_ONEDNN_OPTS=0``) TensorFlow's own Eigen kernels run them on any CPU."""
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip() in ("0", "false", "False"):
        return True
    return features.isa in _ISA_NAMES[_ISA_NAMES.index("avx512_core") :]


def cpu_features() -> CpuFeatures:
    """This host's :class:`CpuFeatures` (cheap: reads ``/proc`` each call)."""
    model = platform.processor() or "unknown"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("unknown", "", platform.machine()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    detected = "generic"
    for name, needed in ISA_LEVELS:
        if not needed <= flags:
            break
        detected = name
    try:
        gpus = sum(1 for _ in _NVIDIA_GPUS.iterdir()) if _NVIDIA_GPUS.is_dir() else 0
    except OSError:
        gpus = 0
    return CpuFeatures(
        cpu=model,
        cores=len(os.sched_getaffinity(0)),
        detected_isa=detected,
        isa=_capped(detected, os.environ.get("ONEDNN_MAX_CPU_ISA", "")),
        gpus=gpus,
    )


def _capped(detected: str, cap: str) -> str:
    """``detected`` limited to oneDNN's ``ONEDNN_MAX_CPU_ISA`` value (``ALL``/unset: no cap)."""
    cap = cap.strip().lower()
    if cap in ("", "all", "default") or detected == "generic":
        return detected
    # oneDNN also accepts names like AVX512_CORE_AMX_FP16 and AVX2_VNNI: cap at their family.
    known = [name for name in _ISA_NAMES if cap.startswith(name)]
    if not known:
        return detected
    limit = max(known, key=_ISA_NAMES.index)
    return min(detected, limit, key=_ISA_NAMES.index)
