"""TensorFlow and Keras, imported quietly. Modules that need them import them from here.

TensorFlow's C++ start-up messages (cuFFT/cuDNN factory registration, oneDNN notices) are noise
on CPU hosts and bury the pipeline's own log, so they are silenced unless the user already set
TF_CPP_MIN_LOG_LEVEL.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import tensorflow as tf

__all__ = ["keras", "tf"]
