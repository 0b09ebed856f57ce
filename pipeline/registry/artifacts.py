"""What a version folder holds, read back: ``metadata.json`` (the kind of model, its streams and
classes, the sequence spec it decodes media with) and ``model.keras``.

The kind of a model (``sequence_head`` or ``end_to_end``) is recorded once, in the version's
metadata; everything that needs it asks :func:`load_version`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from pipeline import storage
from pipeline.config import join_uri
from pipeline.media.sequences import SequenceSpec
from pipeline.model.kinds import MODEL_KINDS, ModelKind
from pipeline.warehouse.database import ModelRecord

#: Versions registered before the kind was recorded in the metadata were all heads.
LEGACY_KIND: ModelKind = "sequence_head"


def read_metadata(record: ModelRecord) -> dict[str, Any]:
    """The version's ``metadata.json``."""
    return cast(
        dict[str, Any], json.loads(storage.read_bytes(join_uri(record.model_uri, "metadata.json")))
    )


def model_kind(metadata: dict[str, Any]) -> ModelKind:
    kind = metadata.get("kind") or LEGACY_KIND
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r} in metadata.json; expected {MODEL_KINDS}")
    return cast(ModelKind, kind)


@dataclass(frozen=True)
class LoadedVersion:
    """A registered version, loaded and ready to predict with :mod:`pipeline.model.inference`."""

    record: ModelRecord
    model: Any  # keras.Model
    kind: ModelKind
    spec: SequenceSpec | None  # what an end-to-end model decodes media with

    @property
    def streams(self) -> list[str]:
        return self.record.streams or ["video", "audio"]


def load_version(record: ModelRecord) -> LoadedVersion:
    """Load ``model.keras`` and the metadata of a registered version (imports TensorFlow)."""
    from pipeline.model.architecture import load_classifier

    metadata = read_metadata(record)
    spec = metadata.get("sequence_spec")
    return LoadedVersion(
        record,
        load_classifier(join_uri(record.model_uri, "model.keras")),
        model_kind(metadata),
        SequenceSpec(**spec) if spec else None,
    )
