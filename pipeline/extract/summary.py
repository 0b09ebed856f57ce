"""What an extraction run did: the per-shard :class:`ExtractSummary` and the run-level total."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ExtractSummary:
    settings_hash: str
    shard: str = "1/1"
    clips: int = 0  # ok clips in this shard
    cached: int = 0  # already had features: skipped
    by_other_runs: int = 0  # extracted by another run at the same time
    extracted: int = 0  # clips written this run
    reused_streams: int = 0  # clip streams copied from another settings folder
    quarantined: int = 0
    segments: int = 0
    frames: int = 0  # frames that went through the CNN
    setup_seconds: float = 0.0  # importing TensorFlow and building VGG-16
    seconds: float = 0.0  # decoding + CNN + writing, after set-up
    frames_per_second: float = 0.0
    decode_cpu_seconds: float = 0.0  # CPU time of the decoding threads (the CNN's is the rest)
    parts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def combine_summaries(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One run-level summary from the shards' summaries (their ``as_dict()`` values)."""
    total: dict[str, Any] = {"shards": len(summaries)}
    for key in (
        "clips",
        "cached",
        "by_other_runs",
        "extracted",
        "reused_streams",
        "quarantined",
        "segments",
        "frames",
    ):
        total[key] = sum(int(s.get(key, 0)) for s in summaries)
    busiest = max((float(s.get("seconds", 0.0)) for s in summaries), default=0.0)
    total["seconds"] = round(busiest, 3)  # shards run side by side: the slowest one
    total["frames_per_second"] = round(
        sum(float(s.get("frames_per_second", 0.0)) for s in summaries), 2
    )
    total["settings_hash"] = summaries[0]["settings_hash"] if summaries else None
    return total
