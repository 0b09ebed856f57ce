"""Keras callbacks of the training stage (imported only when a model is trained)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import storage
from pipeline.tfenv import keras

log = logging.getLogger("pipeline.training.trainer")


class Checkpointer(keras.callbacks.Callback):  # type: ignore[misc]
    """After every epoch, atomically save the model with its optimiser state, the best weights
    so far and the run state (history, early-stopping counters), so a killed run resumes from
    its last finished epoch. Early stopping lives here too (stop after ``patience`` epochs
    without improving ``monitor``; the best weights are restored by the caller), so its counters
    survive a restart.

    ``state`` is updated in place: ``epoch`` (last finished, 0-based), ``best``, ``best_epoch``,
    ``wait``, ``stopped`` and ``history`` (metric name -> values per epoch).
    """

    def __init__(self, run_dir: Path, state: dict[str, Any], monitor: str, patience: int) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.state = state
        self.monitor = monitor
        self.patience = patience

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = {**(logs or {}), "epoch_seconds": time.perf_counter() - self.epoch_started}
        state = self.state
        for key, value in logs.items():
            state["history"].setdefault(key, []).append(round(float(value), 6))
        value = float(logs.get(self.monitor, np.inf))
        improved = state["best"] is None or value < state["best"]
        # Files are named by epoch and state.json (written last) names the current ones, so a
        # kill at any instant leaves a state whose files all exist and belong together.
        if improved:
            state["best"], state["best_epoch"], state["wait"] = value, epoch, 0
            state["best_weights"] = f"best-{epoch:04d}.weights.h5"
            _atomic_save(self.model.save_weights, self.run_dir / state["best_weights"])
        else:
            state["wait"] += 1
        state["epoch"] = epoch
        if state["wait"] >= self.patience:
            state["stopped"] = True
            self.model.stop_training = True
        state["checkpoint"] = f"epoch-{epoch:04d}.keras"
        _atomic_save(self.model.save, self.run_dir / state["checkpoint"])
        storage.write_bytes(str(self.run_dir / "state.json"), json.dumps(state).encode())
        for old in [*self.run_dir.glob("epoch-*.keras"), *self.run_dir.glob("best-*.weights.h5")]:
            if old.name not in (state["checkpoint"], state["best_weights"]):
                old.unlink(missing_ok=True)
        shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items()))
        log.info("epoch %d: %s%s", epoch + 1, shown, " (best so far)" if improved else "")


def _atomic_save(save: Any, path: Path) -> None:
    """Save under a temporary name with the same suffix (Keras picks the format from it)."""
    tmp = path.with_name(f".tmp-{path.name}")
    save(str(tmp))
    tmp.replace(path)
