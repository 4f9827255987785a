"""Child processes that are always torn down: own process group, logs to a file, PDEATHSIG."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from mlmesh.local.errors import InfraError

_PR_SET_PDEATHSIG = 1
# Loaded in the parent: dlopen between fork and exec is not async-signal-safe.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class ManagedProcess:
    """One server process, in its own session so stop() can signal all its children too.

    With tie_to_parent, the kernel SIGKILLs the child when the *thread* that called start() ends
    (PR_SET_PDEATHSIG follows the thread), so call start() from the main or another long-lived thread.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        log_path: Path,
        env: dict | None = None,
        cwd: Path | None = None,
        tie_to_parent: bool = True,
        install_hint: str = "make setup",
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.env = env
        self.cwd = cwd
        self.tie_to_parent = tie_to_parent
        self.install_hint = install_hint
        self.pid: int | None = None
        self._popen: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        if self._popen is not None:
            raise InfraError(f"{self.name} was already started (pid {self.pid})")
        exe = _resolve(self.argv[0])
        if exe is None:
            raise InfraError(f"{Path(self.argv[0]).name} not found: install {self.install_hint}")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        preexec = _die_with_parent(os.getpid()) if self.tie_to_parent else None
        try:
            self._popen = subprocess.Popen(
                [exe, *self.argv[1:]],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=preexec,
            )
        except OSError as exc:
            self._close_log()
            raise InfraError(f"cannot start {self.name} ({exe}): {exc.strerror}") from None
        self.pid = self._popen.pid

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                data = f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(data.splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the group, SIGKILL after `grace` seconds, reap. Safe to call twice."""
        popen = self._popen
        if popen is None:
            return
        if popen.poll() is None:
            _signal_group(popen.pid, signal.SIGTERM)
            try:
                popen.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(popen.pid, signal.SIGKILL)
                popen.wait()
        # The leader is gone; anything it left in its group (e.g. Triton's python stubs) is an orphan.
        _signal_group(popen.pid, signal.SIGKILL)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.pid}, alive={self.alive()})"


def _resolve(program: str) -> str | None:
    if os.sep in program:
        return program if os.access(program, os.X_OK) and Path(program).is_file() else None
    return shutil.which(program)


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _proc_state(pid: int) -> str | None:
    """The /proc state letter of pid, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def pid_running(pid: int) -> bool:
    """True when pid exists and is not a zombie (an unreaped zombie no longer runs anything)."""
    state = _proc_state(pid)
    return state is not None and state not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def stop_pid(pid: int, grace: float = 10.0, expect_cmd: str | None = None) -> bool:
    """Stop a process known only by pid (as `mlmesh down` does); returns whether it was running.

    With `expect_cmd`, the process is only touched when its command line contains it, so a pid
    reused by an unrelated process after a reboot or crash is left alone.
    """
    if not pid_running(pid):
        _reap(pid)
        return False
    if expect_cmd is not None and expect_cmd not in _cmdline(pid):
        return False
    try:
        is_leader = os.getpgid(pid) == pid
    except ProcessLookupError:
        return False

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            (os.killpg if is_leader else os.kill)(pid, sig)

    send(signal.SIGTERM)
    if not _wait_gone(pid, grace):
        send(signal.SIGKILL)
        _wait_gone(pid, 5.0)
    if is_leader:
        send(signal.SIGKILL)  # leftovers of its group
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        _reap(pid)
        if not pid_running(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # not our child: its parent (or init) reaps it
        os.waitpid(pid, os.WNOHANG)


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    proc: ManagedProcess | None = None,
    interval: float = 0.1,
) -> None:
    """Poll `check` until it returns True; OSError from it counts as "not yet".

    Raises InfraError naming `what` when `proc` exits first or `timeout` passes, with the last
    log line in the message and the log tail in `details`.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and not proc.alive():
            raise _failure(f"{what}: {proc.name} exited early with code {proc.returncode}", proc)
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise _failure(f"{what}: not ready after {timeout:g}s", proc)
        time.sleep(interval)


def _failure(message: str, proc: ManagedProcess | None) -> InfraError:
    if proc is None:
        return InfraError(message)
    tail = proc.log_tail(20)
    last = next((line.strip() for line in reversed(tail.splitlines()) if line.strip()), "")
    if last:
        message += f"; last log line: {last[:300]}"
    return InfraError(f"{message} (see {proc.log_path})", details=tail)


def start_service(
    name: str,
    settings: dict[str, str],
    state_dir: Path,
    *,
    module: str = "",
    prefix: str = "",
    args: tuple[str, ...] = (),
    timeout: float = 90.0,
) -> tuple[ManagedProcess, dict]:
    """Start `python -m mlmesh.<module or name> *args` with `settings` as MLMESH_<NAME>_* variables
    (plus a ready file and its log in `state_dir`), and wait until it reports its ports. Returns the
    process and the ready file's contents (grpc_port and whatever else the service adds). Tests and
    benchmarks start single services this way; `mlmesh up` composes the whole mesh itself."""
    import json

    p = prefix or f"MLMESH_{name.upper().replace('-', '_')}_"
    ready = state_dir / f"{name}.ready"
    ready.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLMESH_")}
    env.update({p + "READY_FILE": str(ready), **{p + k: v for k, v in settings.items()}})
    argv = [sys.executable, "-m", f"mlmesh.{module or name}", *args]
    proc = ManagedProcess(name, argv, log_path=state_dir / f"{name}.log", env=env)
    proc.start()
    try:
        wait_until(ready.is_file, timeout=timeout, what=f"{name} to start", proc=proc, interval=0.05)
        return proc, json.loads(ready.read_text())
    except BaseException:
        proc.stop(grace=5)
        raise
