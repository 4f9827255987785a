"""I/O edges of the trainer: storage, the model registry, metrics."""
