"""``PIPELINE_CNN_PRECISION=auto``: one precision per deployment, never one per host.

The precision is part of a feature set's identity (its numbers change with it), so if every
host resolved ``auto`` from its own hardware, a bfloat16 worker and a float32 worker (or the
trainer on a third host) would write and read different feature folders. Instead ``auto`` is
decided once, by the first process that needs it, from that host's hardware, and recorded
beside the feature folders in ``features/precision.json``. Every later process on any host
reads the record and uses that precision, natively or (slower) emulated.

To decide again (after moving the deployment to other hardware, say), delete the record; to
stop deciding, set ``PIPELINE_CNN_PRECISION`` to ``float32`` or ``bfloat16`` explicitly.

Standard library only (the settings import it).
"""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Literal

from pipeline import storage
from pipeline.errors import ConfigError
from pipeline.hardware import CpuFeatures, cpu_features

log = logging.getLogger(__name__)

ResolvedPrecision = Literal["float32", "bfloat16"]
#: The record's name under the feature-store root.
RECORD_NAME = "precision.json"


@dataclass(frozen=True)
class PrecisionDecision:
    """What ``auto`` means in this deployment, and who decided it from which hardware."""

    precision: ResolvedPrecision
    decided_by: str  # host name of the deciding process
    isa: str  # its instruction set (oneDNN's name)
    gpus: int
    decided_at: str  # ISO 8601, UTC

    def describe(self) -> str:
        gpu = f" and {self.gpus} GPU(s)" if self.gpus else ""
        return (
            f"{self.precision} (auto, decided by {self.decided_by} with {self.isa}{gpu} "
            f"at {self.decided_at})"
        )


def hardware_precision(features: CpuFeatures) -> ResolvedPrecision:
    """bfloat16 where the hardware runs it natively, float32 elsewhere."""
    return "bfloat16" if features.bf16_native else "float32"


def record_uri(features_root: str) -> str:
    return f"{features_root.rstrip('/')}/{RECORD_NAME}"


def read_decision(features_root: str) -> PrecisionDecision | None:
    """The deployment's recorded decision, or None if ``auto`` was never resolved here."""
    uri = record_uri(features_root)
    if not storage.exists(uri):
        return None
    try:
        payload = json.loads(storage.read_bytes(uri))
        return PrecisionDecision(**payload)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{uri} is not a precision record ({exc}); delete it to let `auto` decide again"
        ) from exc


def decide_auto_precision(features_root: str) -> PrecisionDecision:
    """The deployment's meaning of ``auto``: the recorded one, else decided here and recorded.

    Of processes deciding at once, the first to create the record wins and all return its
    decision.
    """
    existing = read_decision(features_root)
    if existing is not None:
        return existing
    features = cpu_features()
    decision = PrecisionDecision(
        precision=hardware_precision(features),
        decided_by=socket.gethostname(),
        isa=features.isa,
        gpus=features.gpus,
        decided_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    payload = json.dumps(asdict(decision), indent=2).encode()
    try:
        created = storage.create_exclusive(record_uri(features_root), payload)
    except OSError as exc:
        raise ConfigError(
            f"PIPELINE_CNN_PRECISION=auto must be recorded once per deployment, in "
            f"{record_uri(features_root)}, and that failed ({exc}). Make the feature store "
            "writable, or set PIPELINE_CNN_PRECISION to float32 or bfloat16."
        ) from exc
    if created:
        log.info("precision auto -> %s for this deployment", decision.describe())
    recorded = read_decision(features_root)
    return recorded if recorded is not None else decision
