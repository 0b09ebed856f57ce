"""The model registry: version folders and metadata, the promotion gate, promotion and rollback."""
