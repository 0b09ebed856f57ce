"""Hyper-parameter tuning: a grid of candidates, and the best of the trained ones (numpy-free,
imported by the model_training DAG's planning tasks)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from pipeline.errors import DataValidationError
from pipeline.training.params import TrainParams

#: Hyper-parameters a tuning grid may vary, and the types their values must have.
TUNABLE = {"lstm_units": int, "learning_rate": float, "dropout": float, "batch_size": int}


def candidate_grid(base: dict[str, Any], grid: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values on top of ``base`` (one candidate if empty).

    Raises:
        ValueError: a grid key is not tunable or its values are not a non-empty list.
    """
    for key, values in grid.items():
        if key not in TUNABLE:
            raise ValueError(f"cannot tune {key!r}; tunable: {', '.join(TUNABLE)}")
        if not isinstance(values, list | tuple) or not values:
            raise ValueError(f"grid values for {key!r} must be a non-empty list")
    keys = sorted(grid)
    combos = itertools.product(*(grid[k] for k in keys)) if keys else [()]
    candidates = []
    for combo in combos:
        candidate = {**base, **{k: TUNABLE[k](v) for k, v in zip(keys, combo, strict=True)}}
        TrainParams(**candidate)  # validate early, before any task trains
        candidates.append(candidate)
    return candidates


def best_candidate(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The candidate with the highest validation macro-F1; of tied ones, the first in grid order.

    ``results`` come in grid order (the mapped tasks' map indexes). Ties are not broken by
    version: versions are handed out in the order trainings finish registering, which on a
    fleet depends on which worker was faster, so the same grid would promote different models.
    """
    if not results:
        raise DataValidationError("no candidate model was trained")
    ranked = sorted(
        enumerate(results),
        key=lambda item: (-((item[1].get("val_metrics") or {}).get("macro_f1") or 0.0), item[0]),
    )
    return ranked[0][1]
