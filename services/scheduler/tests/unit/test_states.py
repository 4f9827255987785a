"""The job state machine: legal paths, refused transitions, and what each transition records."""

from __future__ import annotations

import itertools

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.common.errors import FailedPrecondition
from mlmesh.scheduler.domain import states
from mlmesh.scheduler.job_factory import new_job

pytestmark = pytest.mark.timeout(30)
NOW = Timestamp(seconds=1_800_000_000)
ALL = [s for s in job_pb2.JobState.values() if s != job_pb2.JOB_STATE_UNSPECIFIED]


def _job(kind=job_pb2.JOB_KIND_COMMAND) -> job_pb2.Job:
    spec = job_pb2.JobSpec(name="j", kind=kind, team="t", queue="q")
    return new_job(spec, "j1", "alice")


def test_happy_path_records_every_transition():
    job = _job()
    for dst, reason in [(states.ADMITTED, "Admitted"), (states.RUNNING, "Running"), (states.SUCCEEDED, "Done")]:
        job = states.transition(job, dst, reason, now=NOW)
    assert job.status.state == states.SUCCEEDED
    assert [(h.from_state, h.to_state) for h in job.status.history] == [
        (job_pb2.JOB_STATE_UNSPECIFIED, states.PENDING),
        (states.PENDING, states.ADMITTED),
        (states.ADMITTED, states.RUNNING),
        (states.RUNNING, states.SUCCEEDED),
    ]
    assert job.status.finish_time == NOW


def test_preempted_and_retrying_go_back_to_pending_with_a_new_attempt():
    job = _job()
    job = states.transition(job, states.ADMITTED, "Admitted", now=NOW)
    job.status.placement.world_size = 2
    job.status.run_id = "r1"
    job = states.transition(job, states.RUNNING, "Running", now=NOW)
    job = states.transition(job, states.PREEMPTED, "HigherPriority", now=NOW)
    assert job.status.preemption_count == 1 and job.status.placement.world_size == 2  # still held
    job = states.transition(job, states.PENDING, "Preempted", now=NOW)
    assert job.status.attempt == 2 and not job.status.HasField("placement") and job.status.run_id == ""
    job = states.transition(job, states.ADMITTED, "Admitted", now=NOW)
    job = states.transition(job, states.RETRYING, "NodeLost", now=NOW)
    job = states.transition(job, states.PENDING, "RetryBackoffElapsed", now=NOW)
    assert job.status.attempt == 3


@pytest.mark.parametrize("terminal", sorted(states.TERMINAL))
def test_terminal_states_never_move(terminal):
    job = _job()
    job.status.state = terminal
    for dst in ALL:
        with pytest.raises(FailedPrecondition):
            states.transition(job, dst, "Late", now=NOW)


def test_pending_cannot_jump_to_running_unless_workerless():
    with pytest.raises(FailedPrecondition):
        states.transition(_job(), states.RUNNING, "Running", now=NOW)
    moved = states.transition(_job(job_pb2.JOB_KIND_PIPELINE), states.RUNNING, "StepsStarted", now=NOW, workerless=True)
    assert moved.status.state == states.RUNNING


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(ALL), max_size=30))
def test_any_sequence_only_follows_allowed_edges(path):
    job = _job()
    for dst in path:
        src = job.status.state
        try:
            job = states.transition(job, dst, "R", now=NOW)
        except FailedPrecondition:
            assert not states.can_transition(src, dst) or (src, dst) in states._WORKERLESS_ONLY
            continue
        assert states.can_transition(src, dst)
        assert job.status.history[-1].from_state == src and job.status.history[-1].to_state == dst
    assert len(job.status.history) <= states.HISTORY_LIMIT
    # A job holds a placement only in holding states.
    if job.status.state not in states.HOLDING:
        assert not job.status.HasField("placement")


def test_retry_policy():
    job = _job()
    job.spec.retry.max_retries = 1
    assert states.should_retry(job, job_pb2.FAILURE_CLASS_NODE_LOST)
    assert not states.should_retry(job, job_pb2.FAILURE_CLASS_USER_ERROR)
    assert not states.should_retry(job, job_pb2.FAILURE_CLASS_OUT_OF_MEMORY)
    job.status.attempt = 2
    assert not states.should_retry(job, job_pb2.FAILURE_CLASS_NODE_LOST)
    job.spec.retry.initial_backoff.seconds = 5
    job.spec.retry.backoff_multiplier = 3
    job.spec.retry.max_backoff.seconds = 12
    assert states.retry_backoff_s(job) == 12  # 5 * 3 capped


def test_allowed_table_covers_every_state():
    assert set(states.ALLOWED) == set(ALL)
    for src, dst in itertools.product(ALL, ALL):
        assert states.can_transition(src, dst) == (dst in states.ALLOWED[src])
