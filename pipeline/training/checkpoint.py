"""The resume state machine of a training run: :class:`RunState` and the Keras callback that
advances it after every epoch (imported only when a model is trained)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import storage
from pipeline.tfenv import keras

log = logging.getLogger("pipeline.training.trainer")


@dataclass
class RunState:
    """Where a run is, saved as ``state.json`` beside its checkpoints after every epoch.

    ``epoch`` is the last finished epoch (0-based, -1 before the first); ``best`` /
    ``best_epoch`` / ``best_weights`` the best monitored value so far and its weights file;
    ``wait`` the epochs since it improved; ``stopped`` whether early stopping ended the run;
    ``history`` the metric values per epoch.
    """

    fingerprint: str
    epoch: int = -1
    best: float | None = None
    best_epoch: int | None = None
    best_weights: str | None = None
    checkpoint: str | None = None
    wait: int = 0
    stopped: bool = False
    history: dict[str, list[float]] = field(default_factory=dict)

    @property
    def next_epoch(self) -> int:
        return self.epoch + 1

    def finished(self, epochs: int) -> bool:
        return self.stopped or self.next_epoch >= epochs

    def save(self, run_dir: Path) -> None:
        storage.write_bytes(str(run_dir / "state.json"), json.dumps(asdict(self)).encode())

    @classmethod
    def load(cls, run_dir: Path, fingerprint: str) -> RunState | None:
        """The state of an interrupted run of the same training, if its checkpoint is complete."""
        state_file = run_dir / "state.json"
        if not state_file.exists():
            return None
        try:
            state = cls(**json.loads(state_file.read_text()))
        except (TypeError, ValueError):
            log.warning("ignoring an unreadable %s; training starts over", state_file)
            return None
        complete = state.checkpoint is not None and (run_dir / state.checkpoint).exists()
        return state if complete and state.fingerprint == fingerprint else None


class Checkpointer(keras.callbacks.Callback):  # type: ignore[misc]
    """After every epoch, atomically save the model with its optimiser state, the best weights
    so far and the :class:`RunState`, so a killed run resumes from its last finished epoch.
    Early stopping lives here too (stop after ``patience`` epochs without improving
    ``monitor``; the caller restores the best weights), so its counters survive a restart.
    """

    def __init__(self, run_dir: Path, state: RunState, monitor: str, patience: int) -> None:
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
            state.history.setdefault(key, []).append(round(float(value), 6))
        value = float(logs.get(self.monitor, np.inf))
        improved = state.best is None or value < state.best
        # Files are named by epoch and state.json (written last) names the current ones, so a
        # kill at any instant leaves a state whose files all exist and belong together.
        if improved:
            state.best, state.best_epoch, state.wait = value, epoch, 0
            state.best_weights = f"best-{epoch:04d}.weights.h5"
            _atomic_save(self.model.save_weights, self.run_dir / state.best_weights)
        else:
            state.wait += 1
        state.epoch = epoch
        if state.wait >= self.patience:
            state.stopped = True
            self.model.stop_training = True
        state.checkpoint = f"epoch-{epoch:04d}.keras"
        _atomic_save(self.model.save, self.run_dir / state.checkpoint)
        state.save(self.run_dir)
        remove_checkpoints(self.run_dir, keep=(state.checkpoint, state.best_weights))
        shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items()))
        log.info("epoch %d: %s%s", epoch + 1, shown, " (best so far)" if improved else "")


def remove_checkpoints(run_dir: Path, keep: tuple[str | None, ...] = ()) -> None:
    """Delete the run's model and weights checkpoints except those named in ``keep``."""
    for old in [*run_dir.glob("epoch-*.keras"), *run_dir.glob("best-*.weights.h5")]:
        if old.name not in keep:
            old.unlink(missing_ok=True)


def _atomic_save(save: Any, path: Path) -> None:
    """Save under a temporary name with the same suffix (Keras picks the format from it)."""
    tmp = path.with_name(f".tmp-{path.name}")
    save(str(tmp))
    tmp.replace(path)
