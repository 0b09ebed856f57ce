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


def _result(version: str, f1: float | None, units: int) -> dict[str, object]:
    return {
        "model_version": version,
        "val_metrics": {"macro_f1": f1},
        "candidate": {"lstm_units": units},
    }


def test_the_grid_expands_in_a_fixed_order_and_rejects_what_cannot_be_tuned() -> None:
    from pipeline.training.tuning import candidate_grid

    grid = candidate_grid({"epochs": 2}, {"lstm_units": [8, 16], "dropout": [0.0, 0.2]})
    assert [(c["dropout"], c["lstm_units"]) for c in grid] == [
        (0.0, 8),
        (0.0, 16),
        (0.2, 8),
        (0.2, 16),
    ]
    assert candidate_grid({"epochs": 2}, {}) == [{"epochs": 2}]
    with pytest.raises(ValueError, match="cannot tune 'epochs'"):
        candidate_grid({}, {"epochs": [1, 2]})
    with pytest.raises(ValueError, match="non-empty list"):
        candidate_grid({}, {"lstm_units": []})


def test_the_best_candidate_is_chosen_by_f1_and_ties_go_to_grid_order_not_version() -> None:
    from pipeline.errors import DataValidationError
    from pipeline.training.tuning import best_candidate

    # On a fleet the second grid point can finish (and be numbered) first: same choice.
    tied = [_result("v0002", 1.0, 8), _result("v0001", 1.0, 16)]
    assert best_candidate(tied)["candidate"] == {"lstm_units": 8}
    assert best_candidate(list(reversed(tied)))["candidate"] == {"lstm_units": 16}
    better = [_result("v0001", 0.5, 8), _result("v0002", 0.75, 16), _result("v0003", None, 32)]
    assert best_candidate(better)["model_version"] == "v0002"
    with pytest.raises(DataValidationError, match="no candidate"):
        best_candidate([])
