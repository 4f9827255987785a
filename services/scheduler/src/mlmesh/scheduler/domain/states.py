"""The job state machine: which transitions are legal, and the pure function that applies one.

PENDING → ADMITTED → RUNNING → SUCCEEDED | FAILED | CANCELLED; PREEMPTED and RETRYING lead back
to PENDING; SKIPPED ends pipeline children whose ancestor failed. Everything else is refused, so a
late or duplicated event can never move a finished job.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.common.errors import FailedPrecondition

S = job_pb2.JobState
PENDING, ADMITTED, RUNNING = S.JOB_STATE_PENDING, S.JOB_STATE_ADMITTED, S.JOB_STATE_RUNNING
SUCCEEDED, FAILED, CANCELLED = S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED
PREEMPTED, RETRYING, SKIPPED = S.JOB_STATE_PREEMPTED, S.JOB_STATE_RETRYING, S.JOB_STATE_SKIPPED

TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, SKIPPED})
# States in which a job holds cluster resources (its placement counts against capacity and quota).
HOLDING = frozenset({ADMITTED, RUNNING, PREEMPTED})

ALLOWED: dict[int, frozenset[int]] = {
    PENDING: frozenset({ADMITTED, CANCELLED, SKIPPED, RUNNING, SUCCEEDED, FAILED}),
    ADMITTED: frozenset({RUNNING, PENDING, PREEMPTED, RETRYING, SUCCEEDED, FAILED, CANCELLED}),
    RUNNING: frozenset({SUCCEEDED, FAILED, CANCELLED, PREEMPTED, RETRYING}),
    PREEMPTED: frozenset({PENDING, CANCELLED, FAILED}),
    RETRYING: frozenset({PENDING, CANCELLED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
    SKIPPED: frozenset(),
}
# PENDING → RUNNING/SUCCEEDED/FAILED exist only for jobs without workers (pipelines and their
# control-plane steps), which are never admitted; `transition` enforces that.
_WORKERLESS_ONLY = {(PENDING, RUNNING), (PENDING, SUCCEEDED), (PENDING, FAILED)}

HISTORY_LIMIT = 50


def state_name(state: int) -> str:
    return S.Name(state).removeprefix("JOB_STATE_")


def can_transition(src: int, dst: int) -> bool:
    return dst in ALLOWED.get(src, frozenset())


def transition(
    job: job_pb2.Job,
    dst: int,
    reason: str,
    message: str = "",
    *,
    now: Timestamp,
    workerless: bool = False,
) -> job_pb2.Job:
    """A copy of `job` moved to `dst`, with the transition recorded; FailedPrecondition if illegal."""
    src = job.status.state
    if not can_transition(src, dst) or ((src, dst) in _WORKERLESS_ONLY and not workerless):
        raise FailedPrecondition(f"job {job.meta.id} cannot go from {state_name(src)} to {state_name(dst)}")
    out = job_pb2.Job()
    out.CopyFrom(job)
    st = out.status
    st.state = dst
    st.reason = reason
    st.message = message
    st.last_transition_time.CopyFrom(now)
    if dst == ADMITTED:
        st.admit_time.CopyFrom(now)
    elif dst == RUNNING:
        st.start_time.CopyFrom(now)
    elif dst in TERMINAL:
        st.finish_time.CopyFrom(now)
    if dst in (PENDING, RETRYING) or dst in TERMINAL:
        # Resources are released: the placement of the finished attempt is no longer held.
        st.ClearField("placement")
        st.borrowing = False
    if dst == PENDING:
        st.run_id = ""  # the next attempt gets a new run
    if src in (RETRYING, PREEMPTED) and dst == PENDING:
        st.attempt += 1
    if dst == PREEMPTED:
        st.preemption_count += 1
    st.history.append(
        job_pb2.JobTransition(
            from_state=src, to_state=dst, reason=reason, message=message, attempt=st.attempt, transition_time=now
        )
    )
    if len(st.history) > HISTORY_LIMIT:
        del st.history[: len(st.history) - HISTORY_LIMIT]
    out.meta.update_time.CopyFrom(now)
    return out


RETRYABLE_FAILURES = frozenset(
    {
        job_pb2.FAILURE_CLASS_COLLECTIVE_TIMEOUT,
        job_pb2.FAILURE_CLASS_SIGNAL,
        job_pb2.FAILURE_CLASS_NODE_LOST,
        job_pb2.FAILURE_CLASS_PREEMPTED,
        job_pb2.FAILURE_CLASS_INFRASTRUCTURE,
    }
)


def should_retry(job: job_pb2.Job, failure_class: int) -> bool:
    """User errors, OOM and deadline are not retried; node loss and platform faults are, up to
    `max_retries` retries after the first attempt."""
    return failure_class in RETRYABLE_FAILURES and job.status.attempt <= job.spec.retry.max_retries


def retry_backoff_s(job: job_pb2.Job) -> float:
    """Exponential backoff of the next retry: initial * multiplier^(attempt-1), capped."""
    retry = job.spec.retry
    initial = retry.initial_backoff.ToTimedelta().total_seconds() or 10.0
    cap = retry.max_backoff.ToTimedelta().total_seconds() or 600.0
    multiplier = retry.backoff_multiplier or 2.0
    return min(cap, initial * multiplier ** max(0, job.status.attempt - 1))
