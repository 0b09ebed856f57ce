"""Which labelled clips train, validate and test a model, the streams it reads, the class
weights, and the fingerprint that names the training (numpy only).

Clips are chosen from an inventory ``{clip_id: [{stream: frames}, ...]}`` (per clip, per
segment, frames per stream): the feature store's for the head (:meth:`FeatureStore.segment_frames`),
the one planned from the warehouse for the end-to-end model (:func:`planned_segment_frames`),
which reads the media and needs no feature cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from pipeline.config import STREAMS
from pipeline.errors import DataValidationError
from pipeline.model.inputs import Split
from pipeline.training.params import TrainParams
from pipeline.warehouse.database import ClipRecord

if TYPE_CHECKING:
    from pipeline.media.sequences import SequenceSpec

log = logging.getLogger("pipeline.training.trainer")

SPLITS = ("train", "val", "test")
#: Bump when training code changes what the same data and parameters produce.
TRAINER_VERSION = 5


@dataclass(frozen=True)
class TrainingSet:
    """Labelled clips with usable segments, per split, and what the model will read."""

    clips: dict[str, list[ClipRecord]]
    class_names: list[str]
    streams: tuple[str, ...]
    examples: dict[str, int]  # usable segments per split

    @property
    def counts(self) -> dict[str, int]:
        return {split: len(self.clips[split]) for split in SPLITS}

    def split(self, name: str) -> Split:
        index = {label: i for i, label in enumerate(self.class_names)}
        clips = self.clips[name]
        return Split(clips, {c.clip_id: index[str(c.label)] for c in clips}, self.examples[name])


def planned_segment_frames(
    clips: Sequence[ClipRecord], spec: SequenceSpec
) -> dict[str, list[dict[str, int]]]:
    """The inventory decoding ``clips`` is expected to give, planned without decoding: per clip
    id, per segment (:func:`~pipeline.media.decode.plan_segments` of its probed duration), the
    frames of every stream: those its modality has (:meth:`SequenceSpec.streams_for`), 0 for the
    others (the shape of :meth:`FeatureStore.segment_frames`).

    Video frames are exact (``frames_per_segment`` capped by ``max_frames``); audio windows are
    estimated from the segment length (the spectrogram adds a few columns at the edges). A clip
    of unknown duration is planned as one segment, and a video's audio stream is planned whether
    or not the file has an audio track (the plan reads no media): decoding may yield fewer
    segments or frames, which the end-to-end input tolerates. Clips without a modality are left
    out.
    """
    from pipeline.media.decode import plan_segments

    inventory: dict[str, list[dict[str, int]]] = {}
    for clip in clips:
        if not clip.modality:
            continue
        streams = spec.streams_for(clip.modality)
        inventory[clip.clip_id] = [
            {s: _planned_frames(s, segment.seconds, spec) if s in streams else 0 for s in STREAMS}
            for segment in plan_segments(clip.duration_seconds or 0.0, spec.segment_seconds)
        ]
    return inventory


def _planned_frames(stream: str, seconds: float, spec: SequenceSpec) -> int:
    if stream == "video":
        return min(spec.frames_per_segment, spec.max_frames)
    # Spectrogram windows of ``seconds`` of audio: at least one (short audio is padded).
    fits = 1 + int(max(0.0, seconds - spec.audio_window_seconds) // spec.audio_hop_seconds)
    return max(1, min(spec.max_frames, fits))


def select_training_set(
    labelled: Sequence[ClipRecord],
    segment_frames: dict[str, list[dict[str, int]]],
    streams: str = "auto",
    *,
    from_media: bool = False,
) -> TrainingSet:
    """Split the labelled clips in the inventory and choose the streams the model reads.

    ``streams="auto"`` takes every stream some training clip has frames in. Clips without frames
    in the chosen streams, and val/test clips whose label is absent from train, are left out.
    ``from_media`` says the inventory is planned from the media (the end-to-end model), not read
    from the feature store; it changes only what the messages tell the user to do.

    Raises:
        DataValidationError: fewer than two classes in the train split.
    """
    with_features = [c for c in labelled if c.clip_id in segment_frames]
    missing = len(labelled) - len(with_features)
    inputs = "media" if from_media else "features"
    if missing and not from_media:
        log.warning("%d labelled clips have no features yet; run `stpipe extract`", missing)
    if streams == "auto":
        present = {
            s
            for c in with_features
            if c.split == "train"
            for seg in segment_frames[c.clip_id]
            for s, n in seg.items()
            if n
        }
        chosen = tuple(s for s in STREAMS if s in present)
    else:
        chosen = STREAMS if streams == "both" else (streams,)

    def usable(clip: ClipRecord) -> int:
        return sum(any(seg[s] for s in chosen) for seg in segment_frames[clip.clip_id])

    by_split: dict[str, list[ClipRecord]] = {s: [] for s in SPLITS}
    for clip in with_features:
        if usable(clip):
            by_split[clip.split].append(clip)
    train_counts = Counter(c.label for c in by_split["train"])
    if len(train_counts) < 2 or not chosen:
        raise DataValidationError(
            f"the train split needs labelled clips of at least two classes with "
            f"{'/'.join(chosen) or 'any'} {inputs}; found {dict(train_counts) or 'none'} "
            f"({len(labelled)} labelled clips, {missing} without {inputs}). Ingest labelled "
            "media (`stpipe ingest DIR --labelled`)"
            + ("." if from_media else " and run `stpipe extract`.")
        )
    class_names = sorted(str(label) for label in train_counts)
    for split in ("val", "test"):
        unknown = [c for c in by_split[split] if c.label not in train_counts]
        if unknown:
            log.warning("%d %s clips have labels absent from train; left out", len(unknown), split)
            by_split[split] = [c for c in by_split[split] if c.label in train_counts]
    examples = {split: sum(usable(c) for c in by_split[split]) for split in SPLITS}
    return TrainingSet(by_split, class_names, chosen, examples)


def training_fingerprint(training_set: TrainingSet, settings_hash: str, params: TrainParams) -> str:
    """Hash of everything that determines the trained model."""
    payload = {
        "trainer_version": TRAINER_VERSION,
        "settings_hash": settings_hash,
        "params": asdict(params),
        "streams": list(training_set.streams),
        "clips": sorted(
            (c.clip_id, c.label or "", c.split)
            for clips in training_set.clips.values()
            for c in clips
        ),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def class_weights(
    training_set: TrainingSet, mode: str, segment_frames: dict[str, list[dict[str, int]]]
) -> dict[int, float] | None:
    """Balanced class weights ``total / (classes * count)`` over training segments, when
    ``mode`` is ``on``, or ``auto`` and the largest class has over 1.5x the smallest's segments."""
    if mode == "off":
        return None
    index = {name: i for i, name in enumerate(training_set.class_names)}
    counts = Counter()  # type: Counter[int]
    for clip in training_set.clips["train"]:
        usable = sum(
            any(seg[s] for s in training_set.streams) for seg in segment_frames[clip.clip_id]
        )
        counts[index[str(clip.label)]] += usable
    if mode == "auto" and max(counts.values()) <= 1.5 * min(counts.values()):
        return None
    total = sum(counts.values())
    weights = {i: total / (len(counts) * n) for i, n in counts.items()}
    log.info(
        "class weights (labels are skewed): %s",
        {training_set.class_names[i]: round(w, 3) for i, w in weights.items()},
    )
    return weights
