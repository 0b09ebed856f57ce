"""Stage 3, train: select and validate data, fit with resumable checkpoints, evaluate, hand the
version to the registry. Only :mod:`~pipeline.training.trainer` and
:mod:`~pipeline.training.checkpoint` import TensorFlow; the rest (params, job, selection,
validation, tuning, ...) stay light, because the stages and the DAG files import them.
"""
