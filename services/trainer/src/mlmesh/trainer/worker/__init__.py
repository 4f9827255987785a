"""Training workers: `python -m mlmesh.trainer.worker --config FILE`, one process per rank."""
