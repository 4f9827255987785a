"""The python-backend model Triton runs for every deployment (copied into each version directory)."""

from pathlib import Path

MODEL_PY = Path(__file__).with_name("model.py")
