"""Stage 3, train: select and validate data, fit with resumable checkpoints, evaluate, hand the
version to the registry. Imports TensorFlow.
"""
