"""The resume state machine of a training run: where its checkpoints live (:class:`RunFolder`),
who may write them (:func:`claim_run`), :class:`RunState`, and the Keras callback that advances
it after every epoch (imported only when a model is trained).

A run's checkpoints live under the data root, ``DATA_DIR/models/_runs/<fingerprint>/``, local
or in an object store: a retried training task on another Celery worker finds them there.
Keras saves and loads local files only, so each run works in a local folder (the run folder
itself for a local root, a private temporary folder for an object store) and every file is
published to the run folder once complete, ``state.json`` (the commit record) last.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import storage
from pipeline.config import join_uri
from pipeline.errors import InfrastructureError
from pipeline.tfenv import keras
from pipeline.warehouse.claims import WarehouseClaims
from pipeline.warehouse.database import Warehouse

log = logging.getLogger("pipeline.training.trainer")

STATE_FILE = "state.json"
CHECKPOINT_PATTERNS = ("epoch-*.keras", "best-*.weights.h5")
TENSORBOARD_DIR = "tensorboard"


class RunFolder:
    """A run's checkpoints: ``uri`` under the data root (local path or object-store URI) and
    ``work``, the local folder Keras saves to and loads from.

    For a local root both are the same folder and publishing costs nothing; for an object store
    ``work`` is a private temporary folder, files are uploaded once saved (each upload is one
    atomic PUT) and downloaded by name on resume. Open one with :meth:`opened`.
    """

    def __init__(self, uri: str, work: Path) -> None:
        self.uri, self.work = uri.rstrip("/"), work

    @classmethod
    @contextlib.contextmanager
    def opened(cls, uri: str) -> Iterator[RunFolder]:
        if storage.is_remote(uri):
            with tempfile.TemporaryDirectory(prefix="stpipe-run-") as scratch:
                yield cls(uri, Path(scratch))
            return
        folder = Path(storage.local_path(uri))
        folder.mkdir(parents=True, exist_ok=True)
        for partial in folder.glob(".tmp-*"):  # a save cut short by a kill
            partial.unlink()
        yield cls(uri, folder)

    @property
    def remote(self) -> bool:
        return storage.is_remote(self.uri)

    def uri_of(self, name: str) -> str:
        return join_uri(self.uri, name)

    def local(self, name: str) -> Path:
        """The local copy of ``name``, downloaded first when the run folder is remote."""
        path = self.work / name
        if self.remote and not path.exists():
            storage.copy_file(self.uri_of(name), str(path))
        return path

    def publish(self, name: str) -> None:
        """Make the local file ``name`` part of the run folder (a no-op for a local root)."""
        if self.remote:
            storage.copy_file(str(self.work / name), self.uri_of(name))

    def publish_tree(self, folder: str) -> None:
        """Publish every file below the local ``folder`` (TensorBoard's logs)."""
        if self.remote:
            for path in sorted((self.work / folder).rglob("*")):
                if path.is_file():
                    self.publish(str(path.relative_to(self.work)))

    def remove_checkpoints(self, keep: tuple[str | None, ...] = ()) -> None:
        """Delete the run's model and weights checkpoints except those named in ``keep``."""
        names = {uri.rsplit("/", 1)[-1] for uri in storage.list_files(self.uri)}
        if self.remote:
            names |= {p.name for p in self.work.iterdir()}
        for name in sorted(names):
            if name in keep or not any(fnmatch.fnmatch(name, p) for p in CHECKPOINT_PATTERNS):
                continue
            storage.remove(self.uri_of(name))
            (self.work / name).unlink(missing_ok=True)


@contextlib.contextmanager
def claim_run(
    warehouse: Warehouse, fingerprint: str, lease_seconds: float
) -> Iterator[WarehouseClaims]:
    """Hold the warehouse's claim on training ``fingerprint``, waiting while another run holds
    it: two workers training the same data never write the same run folder at once.

    The claim is renewed while held and taken over once its holder is gone (at once for a
    process of this machine, after ``lease_seconds`` for another machine), as extraction's
    claims are (:mod:`pipeline.warehouse.claims`); unlike a file lock it works for object-store
    roots and across machines.
    """
    with WarehouseClaims(warehouse, "training", lease_seconds) as claims:
        waited = False
        while not claims.claim([fingerprint]):
            if not waited:
                log.info("train: another run is training the same data; waiting for it")
                waited = True
            time.sleep(min(5.0, lease_seconds / 4))
        yield claims


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

    def save(self, folder: RunFolder) -> None:
        storage.write_bytes(folder.uri_of(STATE_FILE), json.dumps(asdict(self)).encode())

    @classmethod
    def load(cls, folder: RunFolder, fingerprint: str) -> RunState | None:
        """The state of an interrupted run of the same training, if its checkpoint is complete."""
        state_uri = folder.uri_of(STATE_FILE)
        if not storage.exists(state_uri):
            return None
        try:
            state = cls(**json.loads(storage.read_bytes(state_uri)))
        except (TypeError, ValueError):
            log.warning("ignoring an unreadable %s; training starts over", state_uri)
            return None
        complete = state.checkpoint is not None and storage.exists(folder.uri_of(state.checkpoint))
        return state if complete and state.fingerprint == fingerprint else None


class Checkpointer(keras.callbacks.Callback):  # type: ignore[misc]
    """After every epoch, atomically save the model with its optimiser state, the best weights
    so far and the :class:`RunState`, so a killed run resumes from its last finished epoch.
    Early stopping lives here too (stop after ``patience`` epochs without improving
    ``monitor``; the caller restores the best weights), so its counters survive a restart.
    Before saving it confirms that this run still holds its claim (``claims``, on
    ``fingerprint``): a run whose claim was taken over stops rather than overwrite the
    newer run's checkpoints.
    """

    def __init__(
        self,
        folder: RunFolder,
        state: RunState,
        monitor: str,
        patience: int,
        claims: WarehouseClaims | None = None,
    ) -> None:
        super().__init__()
        self.folder = folder
        self.state = state
        self.monitor = monitor
        self.patience = patience
        self.claims = claims

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = {**(logs or {}), "epoch_seconds": time.perf_counter() - self.epoch_started}
        self._confirm_claim()
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
            self._save(self.model.save_weights, state.best_weights)
        else:
            state.wait += 1
        state.epoch = epoch
        if state.wait >= self.patience:
            state.stopped = True
            self.model.stop_training = True
        state.checkpoint = f"epoch-{epoch:04d}.keras"
        self._save(self.model.save, state.checkpoint)
        state.save(self.folder)
        self.folder.remove_checkpoints(keep=(state.checkpoint, state.best_weights))
        shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items()))
        log.info("epoch %d: %s%s", epoch + 1, shown, " (best so far)" if improved else "")

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        # After the TensorBoard callback (listed before this one) has closed its writers.
        self.folder.publish_tree(TENSORBOARD_DIR)

    def _confirm_claim(self) -> None:
        if self.claims is not None and not self.claims.claim([self.state.fingerprint]):
            raise InfrastructureError(
                f"another run took over training {self.state.fingerprint[:16]} (this run's "
                "warehouse claim lapsed: was the warehouse unreachable?); this run stops and "
                "leaves its checkpoints to it"
            )

    def _save(self, save: Any, name: str) -> None:
        """Save under a temporary name with the same suffix (Keras picks the format from it),
        rename, publish."""
        path = self.folder.work / name
        tmp = path.with_name(f".tmp-{name}")
        save(str(tmp))
        tmp.replace(path)
        self.folder.publish(name)
