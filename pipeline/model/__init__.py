"""The model: the LSTM(256) -> Dense(1024) -> softmax architecture (head and end-to-end), its
input pipelines, and inference (the one function that turns clips into probabilities).

:mod:`~pipeline.model.architecture` and :mod:`~pipeline.model.inference` import TensorFlow;
import them only where a model is built or run. :mod:`~pipeline.model.inputs` imports it inside
its functions, and :mod:`~pipeline.model.kinds` and :mod:`~pipeline.model.metrics` never do.
"""
