"""Run records: ids, states and the rules that connect them (pure)."""

from __future__ import annotations

from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.api.trainer.v1 import run_pb2

R = run_pb2
TERMINAL = frozenset({R.RUN_STATE_SUCCEEDED, R.RUN_STATE_FAILED, R.RUN_STATE_STOPPED})
ACTIVE = frozenset(
    {R.RUN_STATE_PENDING, R.RUN_STATE_STARTING, R.RUN_STATE_RUNNING, R.RUN_STATE_RESTARTING, R.RUN_STATE_STOPPING}
)
# Which state may follow which; anything else is a bug in the controller.
_NEXT = {
    R.RUN_STATE_PENDING: {R.RUN_STATE_STARTING, R.RUN_STATE_FAILED, R.RUN_STATE_STOPPING, R.RUN_STATE_STOPPED},
    R.RUN_STATE_STARTING: {R.RUN_STATE_RUNNING, R.RUN_STATE_RESTARTING, R.RUN_STATE_FAILED, R.RUN_STATE_STOPPING},
    R.RUN_STATE_RUNNING: {
        R.RUN_STATE_RESTARTING,
        R.RUN_STATE_STOPPING,
        R.RUN_STATE_SUCCEEDED,
        R.RUN_STATE_FAILED,
    },
    R.RUN_STATE_RESTARTING: {R.RUN_STATE_STARTING, R.RUN_STATE_RUNNING, R.RUN_STATE_FAILED, R.RUN_STATE_STOPPING},
    R.RUN_STATE_STOPPING: {R.RUN_STATE_STOPPED, R.RUN_STATE_FAILED, R.RUN_STATE_SUCCEEDED},
}

TRAINER_KINDS = frozenset({job_pb2.JOB_KIND_TRAIN, job_pb2.JOB_KIND_FINETUNE})
RUNNABLE_KINDS = TRAINER_KINDS | {job_pb2.JOB_KIND_COMMAND}


def run_id_for(job_id: str, attempt: int) -> str:
    """Deterministic, so StartRun is idempotent on (job_id, attempt)."""
    return f"{job_id}-a{attempt}"


def can_move(src: int, dst: int) -> bool:
    return dst in _NEXT.get(src, set())


def state_name(state: int) -> str:
    return R.RunState.Name(state).removeprefix("RUN_STATE_")
