"""Data validation before training: refuse data that cannot give a meaningful model.

Checks, each with a message that says what to do:

* every class has at least ``min_clips_per_class`` training clips;
* no NaN or infinite feature values in any split (when training reads cached features).

(Fewer than two classes is refused earlier, by
:func:`pipeline.training.selection.select_training_set`; a clip has exactly one split, so the
splits cannot overlap.)

The report (per-class clip counts per split, segments, frames per segment per stream) is logged
and returned, so the CLI and the Airflow task can show it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import DataValidationError
from pipeline.features.store import FeatureStore
from pipeline.training.selection import SPLITS
from pipeline.warehouse.database import ClipRecord

log = logging.getLogger(__name__)


@dataclass
class DataReport:
    """What the training data looks like."""

    classes: dict[str, dict[str, int]] = field(default_factory=dict)  # label -> split -> clips
    segments: dict[str, int] = field(default_factory=dict)  # split -> usable segments
    frames_per_segment: dict[str, dict[str, float]] = field(default_factory=dict)  # stream -> stats
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        lines = ["class            " + "".join(f"{s:>8}" for s in SPLITS)]
        for label, counts in sorted(self.classes.items()):
            lines.append(f"{label[:16]:<16} " + "".join(f"{counts.get(s, 0):>8}" for s in SPLITS))
        lines.append("segments         " + "".join(f"{self.segments.get(s, 0):>8}" for s in SPLITS))
        for stream, stats in self.frames_per_segment.items():
            lines.append(
                f"{stream} frames per segment: min {stats['min']:.0f}, median"
                f" {stats['median']:.0f}, max {stats['max']:.0f}"
                f" (segments with none: {stats['empty']:.0f})"
            )
        return "\n".join(lines)


def validate_training_data(
    clips: dict[str, list[ClipRecord]],
    segment_frames: dict[str, list[dict[str, int]]],
    streams: Sequence[str],
    store: FeatureStore | None,
    *,
    min_clips_per_class: int = 2,
) -> DataReport:
    """Check the split clips; raise :class:`DataValidationError` listing every problem found.

    Args:
        clips: per split, the labelled clips that will be used.
        segment_frames: per clip id, per segment, frames per stream (read from the feature
            store, or planned from the media for the end-to-end model).
        streams: streams the model will read.
        store: where the features are (scanned for NaN / inf); None when training decodes the
            media instead (decoding checks its own samples).
        min_clips_per_class: fewest training clips a class may have.
    """
    report = DataReport()
    for split in SPLITS:
        for label, count in Counter(str(c.label) for c in clips.get(split, [])).items():
            report.classes.setdefault(label, {})[split] = count
        report.segments[split] = sum(
            sum(any(seg.get(s, 0) for s in streams) for seg in segment_frames.get(c.clip_id, []))
            for c in clips.get(split, [])
        )
    for stream in streams:
        counts = [
            seg.get(stream, 0)
            for split_clips in clips.values()
            for c in split_clips
            for seg in segment_frames.get(c.clip_id, [])
        ]
        if counts:
            present = [n for n in counts if n] or [0]
            report.frames_per_segment[stream] = {
                "min": float(min(present)),
                "median": float(np.median(present)),
                "max": float(max(present)),
                "empty": float(sum(1 for n in counts if not n)),
            }

    for label, per_split in sorted(report.classes.items()):
        if 0 < per_split.get("train", 0) < min_clips_per_class:
            report.problems.append(
                f"class {label!r} has {per_split['train']} training clip(s), fewer than "
                f"min_clips_per_class={min_clips_per_class}: add clips or lower the minimum"
            )
    if store is not None:
        ids = [c.clip_id for split_clips in clips.values() for c in split_clips]
        report.problems.extend(_non_finite_features(store, ids, streams))
    log.info("training data:\n%s", report.describe())
    if report.problems:
        raise DataValidationError("training data refused:\n- " + "\n- ".join(report.problems))
    return report


def _non_finite_features(
    store: FeatureStore, clip_ids: Sequence[str], streams: Sequence[str]
) -> list[str]:
    """A problem for each stream whose cached features hold NaN or infinite values."""
    problems = []
    for stream in streams:
        for frames in store.iter_stream_frames(clip_ids, stream):
            if not np.all(np.isfinite(frames)):
                problems.append(
                    f"{stream} features contain NaN or infinite values: re-extract with "
                    "`stpipe extract` after deleting the affected feature folder"
                )
                break
    return problems
