"""The data of a training run: the selected clips and streams, their validation report, and the
fingerprint that names the training (numpy only, so ``stpipe`` and the DAG can validate data
without loading TensorFlow)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.features.store import FeatureStore
from pipeline.training.job import TrainingJob
from pipeline.training.selection import (
    TrainingSet,
    planned_segment_frames,
    select_training_set,
    training_fingerprint,
)
from pipeline.training.validation import DataReport, validate_training_data
from pipeline.warehouse.database import ClipRecord


@dataclass(frozen=True)
class TrainingData:
    """The selected, validated data of a run and the fingerprint that names it."""

    training_set: TrainingSet
    segment_frames: dict[str, list[dict[str, int]]]  # the store's, or planned from the media
    report: DataReport
    fingerprint: str


def prepare_data(
    labelled: Sequence[ClipRecord], store: FeatureStore, job: TrainingJob
) -> TrainingData:
    """Select the clips and streams, validate them, and fingerprint the training. The head's
    inventory is the feature store's; the end-to-end model's is planned from the warehouse."""
    params, from_media = job.params, job.params.end_to_end
    if from_media:
        segment_frames = planned_segment_frames(labelled, job.sequence_spec)
    else:
        segment_frames = store.segment_frames(c.clip_id for c in labelled)  # from the index
    training_set = select_training_set(
        labelled, segment_frames, params.streams, from_media=from_media
    )
    report = validate_training_data(
        training_set.clips,
        segment_frames,
        training_set.streams,
        None if from_media else store,
        min_clips_per_class=params.min_clips_per_class,
    )
    fingerprint = training_fingerprint(training_set, store.settings_hash, params)
    return TrainingData(training_set, segment_frames, report, fingerprint)
