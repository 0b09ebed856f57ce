"""The two kinds of model (numpy-free; recorded as ``kind`` in a version's metadata.json)."""

from typing import Literal

#: ``sequence_head`` reads cached CNN features; ``end_to_end`` decodes media through VGG-16.
ModelKind = Literal["sequence_head", "end_to_end"]
MODEL_KINDS: tuple[ModelKind, ...] = ("sequence_head", "end_to_end")
