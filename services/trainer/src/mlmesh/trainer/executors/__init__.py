"""Worker executors: how the trainer starts and stops worker processes (local, agents, kubernetes)."""
