"""Training progress in `mlmesh submit --watch` / `mlmesh jobs watch`: the line's format, polling
the trainer at most once per interval, and silence when the trainer is unknown or down."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.api.trainer.v1 import run_pb2, trainer_service_pb2
from mlmesh.cli.jobs import ProgressPoller, progress_text, with_ticks
from mlmesh.cli.output import CliError
from mlmesh.sdk.client import RpcFailure

pytestmark = pytest.mark.timeout(30)


def _progress(step: int, total: int = 6, **fields) -> run_pb2.Progress:
    p = run_pb2.Progress(step=step, total_steps=total, loss=2.5, tokens_per_second=1234.4, **fields)
    p.eta.FromSeconds(75)
    return p


def _job(state=job_pb2.JOB_STATE_RUNNING, kind=job_pb2.JOB_KIND_FINETUNE, run_id="j1-a1") -> job_pb2.Job:
    job = job_pb2.Job()
    job.meta.id, job.spec.name, job.spec.kind = "j1", "ft", kind
    job.status.state, job.status.run_id = state, run_id
    return job


class FakeTrainer:
    """Stands in for the trainer's Client: answers GetRun with `progress`, or raises `error`."""

    def __init__(self, progress: run_pb2.Progress | None = None, error: Exception | None = None):
        self.progress, self.error, self.calls, self.closed = progress, error, [], False
        self.stub = self

    def GetRun(self, request, **kw):  # the stub method ProgressPoller passes to call()
        raise AssertionError("called through Client.call only")

    def call(self, method, request: trainer_service_pb2.GetRunRequest, timeout=None):
        self.calls.append(request.run_id)
        if self.error is not None:
            raise self.error
        return trainer_service_pb2.GetRunResponse(run=run_pb2.Run(run_id=request.run_id, progress=self.progress))

    def close(self) -> None:
        self.closed = True


def test_progress_line():
    assert progress_text(_progress(3)) == "step 3/6  loss 2.5000  1,234 tok/s  ETA 1m15s"
    assert progress_text(_progress(6, mfu=0.412)) == "step 6/6  loss 2.5000  1,234 tok/s  MFU 41.2%"


def test_polls_at_most_once_per_interval_and_shows_each_step_once():
    trainer = FakeTrainer(_progress(2))
    poller = ProgressPoller(interval_s=0.2, make_client=lambda: trainer)
    assert poller.poll(_job()) == _progress(2)
    assert poller.poll(_job()) is None and trainer.calls == ["j1-a1"]  # not due yet
    time.sleep(0.25)
    assert poller.poll(_job()) is None and len(trainer.calls) == 2  # due, but step 2 was shown
    trainer.progress = _progress(6)
    # The job just ended: one last poll, whatever the interval, so the final steps are shown.
    assert poller.poll(_job(job_pb2.JOB_STATE_SUCCEEDED), final=True) == _progress(6)
    poller.close()
    assert trainer.closed


def test_only_running_trainer_jobs_are_polled():
    trainer = FakeTrainer(_progress(1))
    poller = ProgressPoller(interval_s=0, make_client=lambda: trainer)
    assert poller.poll(_job(kind=job_pb2.JOB_KIND_COMMAND)) is None
    assert poller.poll(_job(state=job_pb2.JOB_STATE_ADMITTED)) is None
    assert poller.poll(_job(run_id="")) is None
    assert trainer.calls == []


def test_unreachable_or_unknown_trainer_is_quiet():
    down = FakeTrainer(error=RpcFailure(grpc.StatusCode.UNAVAILABLE, "unavailable: connection refused"))
    poller = ProgressPoller(interval_s=0, make_client=lambda: down)
    assert poller.poll(_job()) is None
    assert poller.poll(_job()) is None and down.calls == ["j1-a1"]  # backing off, not retrying each tick

    made = []

    def no_endpoint():
        made.append(1)
        raise CliError("no trainer endpoint: run `mlmesh up` or set MLMESH_TRAINER_ADDR")

    unknown = ProgressPoller(interval_s=0, make_client=no_endpoint)
    assert unknown.poll(_job()) is None and unknown.poll(_job()) is None and made == [1]


def test_with_ticks_interleaves_ticks_and_raises_the_streams_error():
    release = threading.Event()

    def stream():
        yield "a"
        release.wait(5)
        yield "b"
        raise RpcFailure(grpc.StatusCode.PERMISSION_DENIED, "permission_denied: no")

    got = []
    with pytest.raises(RpcFailure):
        for item in with_ticks(stream(), every_s=0.05):
            got.append(item)
            if got.count(None) == 2:
                release.set()
    assert got[0] == "a" and got.count(None) >= 2 and got[-1] == "b"
