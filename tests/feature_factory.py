"""Warehouse rows and cached features for training/scoring tests, without running the CNN."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from pipeline.features.store import FeatureStore, SegmentFeatures
from pipeline.ingest.register import split_for
from pipeline.warehouse.database import Warehouse


def temporal_corpus(
    warehouse: Warehouse,
    store: FeatureStore,
    *,
    per_class: int = 60,
    unlabelled: int = 0,
    stream: str = "video",
    seed: int = 0,
    part_size: int = 50,
) -> dict[str, str]:
    """Two classes with the same frames in opposite orders ('up' = A,B,C,D; 'down' = D,C,B,A).

    Frames are non-negative like ReLU features, with noise and random lengths 3-6 frames; every
    clip is one segment of ``stream`` (the other stream empty). Returns clip_id -> label ('' for
    unlabelled clips). ``part_size`` clips go into each feature-store part.
    """
    rng = np.random.default_rng(seed)
    prototypes = rng.gamma(1.0, 1.0, size=(4, 512)).astype(np.float32)
    labels: dict[str, str] = {}
    rows = []
    for index in range(2 * per_class + unlabelled):
        label = ("up", "down")[index % 2]
        order = [0, 1, 2, 3] if label == "up" else [3, 2, 1, 0]
        length = int(rng.integers(3, 7))
        picks = np.array(order)[np.linspace(0, 3.999, length).astype(int)]
        frames = prototypes[picks] + rng.normal(0, 0.3, size=(length, 512)).astype(np.float32)
        clip_id = hashlib.sha256(f"{seed}-{stream}-{index}".encode()).hexdigest()
        is_labelled = index < 2 * per_class
        modality = "audio" if stream == "audio" else "video"
        warehouse.add_clip(_row(clip_id, label if is_labelled else None, modality))
        labels[clip_id] = label if is_labelled else ""
        features = np.maximum(frames, 0).astype(np.float32)
        empty = np.zeros((0, 512), np.float32)
        streams = {"video": empty, "audio": empty, stream: features}
        rows.append(SegmentFeatures(clip_id, 0, 1, 0.0, 1.0, modality, streams))
    for start in range(0, len(rows), part_size):
        store.write_part(rows[start : start + part_size])
    return labels


def _row(clip_id: str, label: str | None, modality: str) -> dict[str, Any]:
    return {
        "clip_id": clip_id,
        "uri": f"/landing/{clip_id[:8]}",
        "media_uri": f"/media/{clip_id}",
        "modality": modality,
        "label": label,
        "split": split_for(clip_id),
        "status": "ok",
        "error": None,
        "size_bytes": 1,
        "duration_seconds": 1.0,
    }
