"""Training defaults are declared once, in TrainParams: the CLI shows and uses them."""

from __future__ import annotations

import dataclasses

import pytest
import typer

from pipeline.cli.app import app
from pipeline.training.params import DEFAULTS, TrainParams, param_help, param_schema


def test_every_train_option_defaults_to_the_declared_value_with_its_help() -> None:
    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    options = {p.name: p for p in command.params}
    for field in dataclasses.fields(TrainParams):
        if field.name == "seed":  # the CLI takes the seed from PIPELINE_SEED
            assert field.name not in options
            continue
        option = options[field.name]
        assert option.default == getattr(DEFAULTS, field.name), field.name
        assert option.help == param_help(field.name)


def test_param_schema_carries_the_declared_bounds_and_choices() -> None:
    assert param_schema("epochs") == {
        "default": 40,
        "description": param_help("epochs"),
        "type": "integer",
        "minimum": 1,
        "maximum": 1000,
    }
    assert param_schema("streams")["enum"] == ["auto", "video", "audio", "both"]
    with pytest.raises(KeyError, match="no training parameter"):
        param_schema("nope")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"epochs": 1001}, "epochs must be <= 1000"),
        ({"learning_rate": 1.0}, "learning_rate must be < 1"),
        ({"learning_rate": 0.0}, "learning_rate must be > 0"),
        ({"dropout": 1.0}, "dropout must be < 1"),
        ({"patience": -1}, "patience must be >= 0"),
        ({"streams": "smell"}, "streams must be one of auto, video, audio, both"),
        ({"class_weights": "maybe"}, "class_weights must be one of auto, on, off"),
        ({"cnn_trainable": True}, "cnn_trainable needs end_to_end"),
    ],
)
def test_out_of_bounds_parameters_are_refused_by_the_declared_bounds(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        TrainParams(**values)  # type: ignore[arg-type]
