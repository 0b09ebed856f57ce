"""Features: the identity of a feature setting (stream hashes), the frozen VGG-16 that turns images
into 512-d vectors, and the feature store (Parquet + TFRecord parts) that caches them.
"""
