"""Inference: the one way clips become class probabilities.

Scoring, the promotion gate and training's evaluation all call :func:`predict_segments` (one
probability vector per clip segment) and :func:`average_segments` (a clip's probabilities are
the mean of its segments'). A head (``kind="sequence_head"``) reads the segments' cached
features from the feature store; an end-to-end model (``kind="end_to_end"``) decodes the
clips' media with the :class:`~pipeline.media.sequences.SequenceSpec` it was trained with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.features.store import FeatureStore, SegmentFeatures
from pipeline.media.sequences import SequenceSpec
from pipeline.model.architecture import predict_probabilities
from pipeline.model.inputs import end_to_end_inputs, iter_clip_segments
from pipeline.model.kinds import ModelKind
from pipeline.warehouse.database import ClipRecord

#: Per clip id, ``(segment, probabilities (classes,))`` for each usable segment, in order.
SegmentProbabilities = dict[str, list[tuple[SegmentFeatures, npt.NDArray[np.float32]]]]


def predict_segments(
    model: Any,
    kind: ModelKind,
    clips: Sequence[ClipRecord],
    streams: Sequence[str],
    *,
    store: FeatureStore | None = None,
    spec: SequenceSpec | None = None,
) -> SegmentProbabilities:
    """Class probabilities of every segment of ``clips`` that has frames in ``streams``.

    Clips without such a segment (no features yet, or nothing in those streams) are absent
    from the result.

    Raises:
        ValueError: a head without ``store``, or an end-to-end model without ``spec``.
    """
    if kind == "end_to_end":
        if spec is None:
            raise ValueError("an end-to-end model needs the sequence spec it was trained with")
        return _predict_from_media(model, clips, streams, spec)
    if store is None:
        raise ValueError("a feature-reading head needs the feature store")
    rows = store.read_segments((c.clip_id for c in clips), streams=streams)
    usable = [
        seg
        for segs in rows.values()
        for seg in segs
        if any(seg.stream(s).shape[0] for s in streams)
    ]
    result: SegmentProbabilities = {}
    probabilities = predict_probabilities(model, [seg.streams for seg in usable])
    for seg, probs in zip(usable, probabilities, strict=True):
        result.setdefault(seg.clip_id, []).append((seg, probs))
    return result


def _predict_from_media(
    model: Any, clips: Sequence[ClipRecord], streams: Sequence[str], spec: SequenceSpec
) -> SegmentProbabilities:
    result: SegmentProbabilities = {}
    for clip in clips:
        for segment, images in iter_clip_segments(clip, spec, streams):
            if not any(images[s].shape[0] for s in streams):
                continue
            inputs = {k: v[np.newaxis] for k, v in end_to_end_inputs(images, spec).items()}
            probs = np.asarray(model.predict_on_batch(inputs), dtype=np.float32)[0]
            meta = SegmentFeatures(
                clip.clip_id,
                segment.index,
                segment.count,
                segment.start,
                segment.end,
                clip.modality or "",
            )
            result.setdefault(clip.clip_id, []).append((meta, probs))
    return result


def average_segments(
    probabilities: Sequence[npt.NDArray[np.floating[Any]]],
) -> npt.NDArray[np.float32]:
    """A clip's class probabilities: the mean of its segments' ``(classes,)`` vectors."""
    mean: npt.NDArray[np.float32] = np.mean(np.asarray(probabilities, np.float64), axis=0).astype(
        np.float32
    )
    return mean


def predict_clips(
    model: Any,
    kind: ModelKind,
    clips: Sequence[ClipRecord],
    streams: Sequence[str],
    *,
    store: FeatureStore | None = None,
    spec: SequenceSpec | None = None,
) -> dict[str, npt.NDArray[np.float32]]:
    """Per clip id, its averaged probabilities (clips without usable segments are absent)."""
    by_clip = predict_segments(model, kind, clips, streams, store=store, spec=spec)
    return {
        clip_id: average_segments([probs for _, probs in rows]) for clip_id, rows in by_clip.items()
    }
