"""Why a worker failed, from its exit status and the tail of its log; and whether to restart."""

from __future__ import annotations

import re
import signal as _signal
from dataclasses import dataclass

from mlmesh.api.scheduler.v1 import job_pb2

# Exit codes the worker uses for failures it recognises itself (all inside 1-127, so anything
# that does not know them still reads them as errors).
EXIT_OUT_OF_MEMORY = 86
EXIT_COLLECTIVE_TIMEOUT = 87
EXIT_INFRASTRUCTURE = 88

RETRYABLE = frozenset(
    {
        job_pb2.FAILURE_CLASS_SIGNAL,
        job_pb2.FAILURE_CLASS_COLLECTIVE_TIMEOUT,
        job_pb2.FAILURE_CLASS_INFRASTRUCTURE,
        job_pb2.FAILURE_CLASS_NODE_LOST,
    }
)

# The rendezvous port was taken between the trainer picking it and rank 0 binding it: a platform
# race, retried on a fresh port.
_PORT_TAKEN = re.compile(r"EADDRINUSE|address already in use", re.I)
_OOM = re.compile(r"CUDA out of memory|OutOfMemoryError|\bMemoryError\b|Cannot allocate memory", re.I)
# A collective failure names the communication layer; a bare "timed out" (an HTTP read, say) does not count.
_COMM = r"(gloo|nccl|ProcessGroup\w*|c10d|collective|barrier|all_?reduce|all_?gather|watchdog)"
_COLLECTIVE = re.compile(
    rf"{_COMM}.*(timed out|timeout|connection (reset|closed)|broken pipe)|(timed out|timeout).*{_COMM}"
    r"|NCCL (error|timeout)",
    re.I,
)


@dataclass(frozen=True)
class Failure:
    failure_class: int  # job_pb2.FailureClass
    reason: str  # UpperCamelCase
    message: str

    @property
    def retryable(self) -> bool:
        return self.failure_class in RETRYABLE


def classify(exit_code: int | None, signal: int | None, log_tail: str = "") -> Failure:
    """Exit codes 1-127 are the user's (not retried) unless the worker or the log says OOM or a
    collective failure; death by a signal (or exit >= 128, a shell's report of one) is retried."""
    if signal is None and exit_code is not None and exit_code >= 128:
        signal = exit_code - 128
    if signal:
        name = _signal_name(signal)
        return Failure(job_pb2.FAILURE_CLASS_SIGNAL, "WorkerKilled", f"killed by {name}")
    if exit_code and _PORT_TAKEN.search(log_tail):
        return Failure(job_pb2.FAILURE_CLASS_INFRASTRUCTURE, "RendezvousPortTaken", _last_line(log_tail, _PORT_TAKEN))
    if exit_code == EXIT_OUT_OF_MEMORY or (exit_code and _OOM.search(log_tail)):
        return Failure(
            job_pb2.FAILURE_CLASS_OUT_OF_MEMORY, "OutOfMemory", _last_line(log_tail, _OOM) or "out of memory"
        )
    if exit_code == EXIT_COLLECTIVE_TIMEOUT or (exit_code and _COLLECTIVE.search(log_tail)):
        return Failure(
            job_pb2.FAILURE_CLASS_COLLECTIVE_TIMEOUT,
            "CollectiveFailed",
            _last_line(log_tail, _COLLECTIVE) or "a collective failed or timed out",
        )
    if exit_code == EXIT_INFRASTRUCTURE:
        return Failure(job_pb2.FAILURE_CLASS_INFRASTRUCTURE, "InfrastructureError", _last_error(log_tail))
    return Failure(job_pb2.FAILURE_CLASS_USER_ERROR, "UserError", f"exit code {exit_code}: {_last_error(log_tail)}")


def missed_heartbeat(rank: int, seconds: float) -> Failure:
    return Failure(
        job_pb2.FAILURE_CLASS_INFRASTRUCTURE, "HeartbeatMissed", f"rank {rank} sent no heartbeat for {seconds:.0f}s"
    )


def _signal_name(sig: int) -> str:
    try:
        return _signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _last_line(text: str, pattern: re.Pattern) -> str:
    for line in reversed(text.splitlines()):
        if pattern.search(line):
            return line.strip()[:300]
    return ""


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return line[:300]
    return lines[-1][:300] if lines else "no output"
