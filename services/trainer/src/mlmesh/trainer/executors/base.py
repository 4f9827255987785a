"""What every executor offers the run controller: start a gang of ranks, report exits, stop."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mlmesh.api.trainer.v1 import run_pb2


@dataclass(frozen=True)
class RankLaunch:
    rank: int
    local_rank: int
    node_id: str = "local"
    agent_address: str = ""
    device_ids: tuple[str, ...] = ()


@dataclass
class LaunchSpec:
    run_id: str
    job_id: str
    # Increases with every restart: the agents' idempotency key, and part of log names.
    launch_id: int
    world_size: int
    argv: list[str]
    env: dict[str, str]
    ranks: list[RankLaunch]
    log_dir: Path
    working_dir: str = ""
    # Never logged, never rendered into manifests (e.g. the storage token).
    secret_env: dict[str, str] = field(default_factory=dict)
    master_addr: str = "127.0.0.1"
    master_port: int = 29500


@dataclass(frozen=True)
class WorkerExit:
    rank: int
    exit_code: int | None
    signal: int | None
    log_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.signal


class WorkerGroup(Protocol):
    """A group whose next_exit never reports (Kubernetes) sets `reports_exits = False`: its run
    then succeeds on rank 0's result report. Groups without the attribute report exits."""

    async def next_exit(self) -> WorkerExit:
        """Waits for the next rank to exit (each rank is reported once)."""

    def statuses(self) -> list[run_pb2.WorkerStatus]: ...

    async def terminate(self, grace_s: float) -> None:
        """SIGTERM every live rank (a worker checkpoints on it), SIGKILL what is left after grace."""

    def alive(self) -> set[int]: ...


class Executor(Protocol):
    kind: int  # run_pb2.ExecutorKind

    async def launch(self, spec: LaunchSpec) -> WorkerGroup: ...


def rank_env(spec: LaunchSpec, r: RankLaunch) -> dict[str, str]:
    """torch.distributed's rendezvous variables plus the platform's names for them."""
    return {
        "RANK": str(r.rank),
        "LOCAL_RANK": str(r.local_rank),
        "WORLD_SIZE": str(spec.world_size),
        "MASTER_ADDR": spec.master_addr,
        "MASTER_PORT": str(spec.master_port),
        "MLMESH_RANK": str(r.rank),
        "MLMESH_WORLD_SIZE": str(spec.world_size),
        "MLMESH_RUN_ID": spec.run_id,
        "MLMESH_JOB_ID": spec.job_id,
    }


def tail(path: Path, limit: int = 8192) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""
