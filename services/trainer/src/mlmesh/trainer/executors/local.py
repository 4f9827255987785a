"""The local executor: ranks as subprocesses of the trainer, each in its own process group (so a
stop also reaches its children) and killed with the trainer if it dies (PDEATHSIG)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from pathlib import Path

from mlmesh.api.trainer.v1 import run_pb2
from mlmesh.trainer.executors.base import LaunchSpec, WorkerExit, rank_env, tail

_PR_SET_PDEATHSIG = 1
try:
    _LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not Linux: no PDEATHSIG
    _LIBC = None


def _die_with_parent() -> None:
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class LocalGroup:
    def __init__(self, spec: LaunchSpec):
        self.spec = spec
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.logs: dict[int, Path] = {}
        self._waits: dict[int, asyncio.Task] = {}
        self._reported: set[int] = set()

    async def start(self) -> None:
        self.spec.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for r in self.spec.ranks:
                env = {**os.environ, **self.spec.env, **rank_env(self.spec, r), **self.spec.secret_env}
                if r.device_ids:
                    env["CUDA_VISIBLE_DEVICES"] = ",".join(r.device_ids)
                log_path = self.spec.log_dir / f"rank-{r.rank}.{self.spec.launch_id}.log"
                self.logs[r.rank] = log_path
                log = await asyncio.to_thread(open, log_path, "ab")
                try:
                    proc = await asyncio.create_subprocess_exec(
                        *self.spec.argv,
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=log,
                        stderr=asyncio.subprocess.STDOUT,
                        env=env,
                        cwd=self.spec.working_dir or None,
                        start_new_session=True,
                        preexec_fn=_die_with_parent,
                    )
                finally:
                    log.close()  # the child holds its own descriptor
                self.procs[r.rank] = proc
                self._waits[r.rank] = asyncio.ensure_future(proc.wait())
        except BaseException:
            await self.terminate(0)
            raise

    async def next_exit(self) -> WorkerExit:
        while True:
            pending = {t: r for r, t in self._waits.items() if r not in self._reported}
            if not pending:
                await asyncio.Event().wait()  # all reported: nothing more will come
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            rank = min(pending[t] for t in done)
            self._reported.add(rank)
            code = self.procs[rank].returncode
            sig = -code if code is not None and code < 0 else None
            # Anything the rank left in its group (a data loader, a compile worker) goes with it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.procs[rank].pid, signal.SIGKILL)
            return WorkerExit(rank, None if sig else code, sig, tail(self.logs[rank]))

    def alive(self) -> set[int]:
        return {r for r, p in self.procs.items() if p.returncode is None}

    def statuses(self) -> list[run_pb2.WorkerStatus]:
        out = []
        for r, p in sorted(self.procs.items()):
            s = run_pb2.WorkerStatus(rank=r, node_id="local", pid=p.pid, alive=p.returncode is None)
            s.log_path = str(self.logs[r])
            if p.returncode is not None:
                if p.returncode < 0:
                    s.signal = -p.returncode
                else:
                    s.exit_code = p.returncode
            out.append(s)
        return out

    async def terminate(self, grace_s: float) -> None:
        live = [p for p in self.procs.values() if p.returncode is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGTERM if grace_s > 0 else signal.SIGKILL)
        if live and grace_s > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(p.wait() for p in live)), grace_s)
        for p in self.procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
        for p in self.procs.values():
            await p.wait()


class LocalExecutor:
    kind = run_pb2.EXECUTOR_KIND_LOCAL

    async def launch(self, spec: LaunchSpec) -> LocalGroup:
        group = LocalGroup(spec)
        await group.start()
        return group
