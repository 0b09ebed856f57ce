"""Data-parallel training over the devices of one worker (``tf.distribute.MirroredStrategy``).

A model created inside :func:`replica_scope` keeps one copy (replica) per device; Keras splits
every batch between them and sums their gradients, so the weights stay identical on all
devices. The *global* batch is kept: each of ``n`` replicas gets ``batch_size / n`` examples of
a step, and one step with ``n`` replicas computes the gradient one device computes (up to the
order of float32 sums). A run therefore gives the model of a one-device run, to within float
rounding, whatever the device count; more devices only make each step faster. (The last,
partial batch of an epoch is split unevenly when it is not a multiple of ``n``: its gradient is
then the mean of the replicas' means, not the batch mean, a small difference that the tests'
tolerance covers.)

``devices`` is 1 (today's path: no strategy), ``n`` > 1 (the first ``n`` GPUs, or logical CPU
devices on a host without GPUs, as the tests use), or 0 (every GPU; one device without GPUs).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from pipeline.errors import ConfigError

log = logging.getLogger("pipeline.training.trainer")


def replica_devices(devices: int) -> list[str]:
    """The names of the devices ``devices`` asks for on this worker (GPUs first).

    Raises:
        ConfigError: more devices asked for than this worker has.
    """
    from pipeline.tfenv import tf

    if devices < 0:
        raise ConfigError(f"devices must be 0 (every GPU) or a positive count (got {devices})")
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if devices == 0:
        return gpus or [d.name for d in tf.config.list_logical_devices("CPU")][:1]
    pool = gpus or [d.name for d in tf.config.list_logical_devices("CPU")]
    if devices > len(pool):
        kind = "GPUs" if gpus else "CPU devices (no GPU found)"
        raise ConfigError(
            f"training asked for {devices} devices but this worker has {len(pool)} {kind}; "
            "ask for fewer, or 0 for every GPU"
        )
    return pool[:devices]


@contextlib.contextmanager
def replica_scope(devices: int) -> Iterator[Any]:
    """Create (build or load) the model inside this: with more than one device it is mirrored
    over them and trains data-parallel; with one there is no strategy at all. Yields the
    strategy, or None."""
    names = replica_devices(devices) if devices != 1 else []
    if len(names) <= 1:
        yield None
        return
    from pipeline.tfenv import tf

    strategy = tf.distribute.MirroredStrategy(names)
    log.info("train: %d replicas (%s)", strategy.num_replicas_in_sync, ", ".join(names))
    with strategy.scope():
        yield strategy


def build_for_replicas(model: Any, dataset: Any) -> None:
    """Build a model created in :func:`replica_scope` (its metrics, loss and optimiser state)
    from the first batch of ``dataset``, before ``fit``. A no-op without a strategy.

    Keras (3.15) otherwise builds a mirrored model at the start of every ``fit``, ``evaluate``
    and ``predict`` by averaging that call's first batch over the replicas, which fails on bool
    tensors (the end-to-end model's frame masks) and on a batch that does not split evenly (a
    validation split smaller than the batch, say). Building is all that averaging is for, so
    once built here, those calls skip it.
    """
    if model.distribute_strategy.num_replicas_in_sync == 1:
        return
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=next(iter(dataset)))
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
