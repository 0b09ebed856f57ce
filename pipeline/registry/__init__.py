"""The model registry: version folders read back (metadata, model), the promotion gate,
promotion and rollback (training writes the folders: :mod:`pipeline.training.version_folder`)."""
