"""Training hyper-parameters, declared once: defaults, help, and bounds.

The CLI (``stpipe train`` options) and the model_training DAG (its ``Param`` s) read their
defaults, help texts and limits from :class:`TrainParams`'s fields, so changing a default here
changes it everywhere. Imports nothing heavy (the DAG file reads it at parse time).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

STREAM_CHOICES = ("auto", "video", "audio", "both")
CLASS_WEIGHT_CHOICES = ("auto", "on", "off")


def _param(default: Any, help: str, **schema: Any) -> Any:
    return field(default=default, metadata={"help": help, "schema": schema})


@dataclass(frozen=True)
class TrainParams:
    """Hyper-parameters of a training run (the seed's defaults)."""

    epochs: int = _param(
        40, "Most epochs (early stopping may end sooner).", minimum=1, maximum=1000
    )
    batch_size: int = _param(32, "Segments per training batch.", minimum=1, maximum=4096)
    learning_rate: float = _param(
        0.002, "Nadam learning rate.", exclusiveMinimum=0, exclusiveMaximum=1
    )
    patience: int = _param(8, "Epochs without validation-loss progress before stopping.", minimum=0)
    seed: int = _param(1337, "Seed of weights, shuffles and dropout (default: PIPELINE_SEED).")
    streams: str = _param(
        "auto",
        "Streams the model reads: auto (what the data has), video, audio, both.",
        enum=list(STREAM_CHOICES),
    )
    lstm_units: int = _param(256, "LSTM width (the seed's 256).", minimum=1, maximum=4096)
    dropout: float = _param(
        0.0, "Dropout after the LSTM and Dense layers.", minimum=0, exclusiveMaximum=1
    )
    end_to_end: bool = _param(
        False,
        "Train the seed's TimeDistributed(VGG-16) end-to-end model on frames decoded from the "
        "media, instead of the head on cached features.",
    )
    cnn_trainable: bool = _param(False, "Fine-tune VGG-16 (with end_to_end).")
    class_weights: str = _param(
        "auto", "auto (balance skewed labels), on or off.", enum=list(CLASS_WEIGHT_CHOICES)
    )
    min_clips_per_class: int = _param(
        2, "Refuse to train when a class has fewer training clips.", minimum=1
    )

    def __post_init__(self) -> None:
        for spec in fields(self):
            problem = _out_of_bounds(getattr(self, spec.name), spec.metadata["schema"])
            if problem:
                raise ValueError(f"{spec.name} {problem}")
        if self.cnn_trainable and not self.end_to_end:
            raise ValueError("cnn_trainable needs end_to_end (the head never sees the CNN)")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def param_help(name: str) -> str:
    """The help text of one hyper-parameter."""
    return str(_field(name).metadata["help"])


def param_schema(name: str) -> dict[str, Any]:
    """One hyper-parameter as keyword arguments of an Airflow ``Param``: default, JSON-schema
    type, bounds or choices, description."""
    spec = _field(name)
    json_type = {bool: "boolean", int: "integer", float: "number", str: "string"}
    kind = type(getattr(DEFAULTS, name))
    schema = dict(spec.metadata["schema"])
    if "enum" not in schema:
        schema["type"] = json_type[kind]
    return {"default": getattr(DEFAULTS, name), "description": param_help(name), **schema}


def _out_of_bounds(value: Any, schema: dict[str, Any]) -> str | None:
    """What is wrong with ``value`` under the field's declared bounds or choices, if anything."""
    if "enum" in schema and value not in schema["enum"]:
        return f"must be one of {', '.join(map(str, schema['enum']))} (got {value!r})"
    checks = (
        ("minimum", lambda v, b: v >= b, ">="),
        ("maximum", lambda v, b: v <= b, "<="),
        ("exclusiveMinimum", lambda v, b: v > b, ">"),
        ("exclusiveMaximum", lambda v, b: v < b, "<"),
    )
    for key, holds, shown in checks:
        if key in schema and not holds(value, schema[key]):
            return f"must be {shown} {schema[key]} (got {value!r})"
    return None


def _field(name: str) -> Any:
    for spec in fields(TrainParams):
        if spec.name == name:
            return spec
    raise KeyError(f"no training parameter {name!r}")


#: The defaults, for ``typer.Option`` defaults and anything else that shows them.
DEFAULTS = TrainParams()
