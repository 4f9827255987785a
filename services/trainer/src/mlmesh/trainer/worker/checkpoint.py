"""Checkpoint save and restore: DeepSpeed engine state (model, optimizer, LR scheduler) plus what
DeepSpeed does not keep: every rank's RNG states and the data position. Together they make a
resumed run's losses equal an uninterrupted run's."""

from __future__ import annotations

import json
import random
import shutil
import threading
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

TAG = "ckpt"
STATE_FILE = "trainer_state.json"


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def write(engine, directory: Path, rank: int, state: dict, exclude_frozen: bool) -> None:
    """Every rank writes its shard and RNG file; rank 0 the trainer state. Collective: all ranks."""
    engine.save_checkpoint(
        str(directory), tag=TAG, client_state={"mlmesh": state}, exclude_frozen_parameters=exclude_frozen
    )
    rng_dir = directory / "rng"
    rng_dir.mkdir(parents=True, exist_ok=True)
    torch.save(rng_state(), rng_dir / f"rank-{rank}.pt")
    if rank == 0:
        (directory / STATE_FILE).write_text(json.dumps(state, indent=1))
    dist.barrier()


def restore(engine, directory: Path, rank: int, world: int) -> dict:
    """Loads a checkpoint written by `write`; returns the trainer state (step, epoch ...)."""
    state = json.loads((directory / STATE_FILE).read_text())
    if state.get("world_size") != world:
        raise ValueError(
            f"checkpoint was written by {state.get('world_size')} ranks; this run has {world} "
            "(exact resume needs the same data-parallel size)"
        )
    engine.load_checkpoint(str(directory), tag=TAG, load_module_strict=False)
    set_rng_state(torch.load(directory / "rng" / f"rank-{rank}.pt", weights_only=False))
    return state


class Committer:
    """Commits checkpoints to storage on rank 0, in the background when asked, one at a time:
    a new save waits for the previous commit, so commits land in step order."""

    def __init__(self, link, reporter, asynchronous: bool):
        self.link = link
        self.reporter = reporter
        self.asynchronous = asynchronous
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.latest: tuple[int, str] | None = None

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.error is not None:
            raise self.error

    def commit(self, upload_id: str, directory: Path, staged_locally: bool, step: int) -> None:
        def work() -> None:
            try:
                if staged_locally:
                    artifact_id = self.link.upload_staged(upload_id, directory)
                    shutil.rmtree(directory, ignore_errors=True)
                else:
                    artifact_id = self.link.commit_direct(upload_id, directory)
                self.latest = (step, artifact_id)
                self.reporter.send("checkpoint", {"step": step, "artifact_id": artifact_id})
            except BaseException as exc:  # surfaced by the next wait()
                self.error = exc

        if self.asynchronous:
            self._thread = threading.Thread(target=work, name="mlmesh-checkpoint-commit", daemon=True)
            self._thread.start()
        else:
            work()
            self.wait()
