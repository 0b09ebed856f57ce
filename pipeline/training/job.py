"""What a training run is asked to do (:class:`TrainingJob`) and what it reports
(:class:`TrainResult`); numpy-free, so the stages and the DAG can name them without TensorFlow."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.config import join_uri
from pipeline.media.sequences import SequenceSpec
from pipeline.model.kinds import ModelKind
from pipeline.registry.promotion import PromotionMode
from pipeline.training.params import TrainParams


@dataclass(frozen=True)
class TrainingJob:
    """Where a training run writes, what it records, and how its version may be promoted."""

    models_root: str  # version folders (a local path or an object-store URI)
    feature_settings: dict[str, Any]  # recorded in the metadata
    sequence_spec: SequenceSpec  # how the end-to-end model decodes media (recorded too)
    cnn_weights: str  # VGG-16 weights of the end-to-end model
    cnn_precision: str  # and the precision its VGG-16 computes in (the features' precision)
    params: TrainParams
    promotion: PromotionMode = "gate"
    promotion_margin: float = 0.0  # macro-F1 the candidate must gain over production
    claim_lease_seconds: float = 60.0  # a dead worker's claim on a run lapses after this
    # Devices of this worker the model is mirrored over (pipeline.training.replicas): 1 = no
    # strategy, n = the first n GPUs (or CPU devices), 0 = every GPU. A property of the worker,
    # not of the model (the global batch is kept), so not a TrainParams field or fingerprinted.
    devices: int = 1

    @property
    def runs_root(self) -> str:
        """Checkpoints and TensorBoard logs of runs in progress, one folder per fingerprint,
        beside the version folders (so under the data root, local or remote)."""
        return join_uri(self.models_root, "_runs")

    @property
    def kind(self) -> ModelKind:
        return "end_to_end" if self.params.end_to_end else "sequence_head"


@dataclass
class TrainResult:
    model_version: str
    model_uri: str
    kind: str
    reused: bool
    production: bool
    class_names: list[str]
    streams: list[str]
    counts: dict[str, int]
    metrics: dict[str, Any] = field(default_factory=dict)
    val_metrics: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    epochs_run: int = 0
    resumed_from_epoch: int | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        summary = asdict(self)
        for key in ("metrics", "val_metrics"):  # XCom stays small
            summary[key] = {
                k: v for k, v in summary[key].items() if k not in ("per_class", "confusion_matrix")
            }
        return summary
