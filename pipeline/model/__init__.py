"""The model: the LSTM(256) -> Dense(1024) -> softmax architecture (head and end-to-end), its
input pipelines, and inference (the one function that turns clips into probabilities).

Every module here imports TensorFlow; import them only where a model is built or run.
"""
