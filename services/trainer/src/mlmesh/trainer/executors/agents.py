"""The agents executor: ranks started by the fabric node agents of the placement's nodes.
Exits arrive as the agents' WorkerExited events (and are polled, in case an event is missed);
a node that dies silently is caught by the controller's heartbeat check."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections import defaultdict
from datetime import timedelta

import grpc

from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.fabric.v1 import node_agent_service_pb2 as api
from mlmesh.api.fabric.v1 import node_agent_service_pb2_grpc
from mlmesh.api.trainer.v1 import run_pb2
from mlmesh.common import contracts
from mlmesh.common.errors import InvalidArgument, Unavailable
from mlmesh.common.events import decode_event
from mlmesh.trainer.executors.base import LaunchSpec, RankLaunch, WorkerExit

log = logging.getLogger(__name__)
POLL_S = 2.0
RPC_TIMEOUT_S = 30.0
# argv[0] the agent replaces with its own interpreter (the nodes' Python need not be at our path).
AGENT_PYTHON = "mlmesh-python"


def exited_subject(run_id: str) -> str:
    return contracts.worker_exited_subject(contracts.ANY, run_id)


class AgentGroup:
    def __init__(self, spec: LaunchSpec, nc, token: str, worker_python: str = sys.executable):
        self.spec = spec
        self._worker_python = worker_python
        self._nc = nc
        self._meta = (("authorization", f"Bearer {token}"),)
        self._by_node: dict[str, list[RankLaunch]] = defaultdict(list)
        for r in spec.ranks:
            self._by_node[r.agent_address].append(r)
        self._channels = {addr: grpc.aio.insecure_channel(addr) for addr in self._by_node}
        self._stubs = {a: node_agent_service_pb2_grpc.NodeAgentServiceStub(c) for a, c in self._channels.items()}
        self._exits: asyncio.Queue[WorkerExit] = asyncio.Queue()
        self._exited: set[int] = set()
        self._workers: dict[int, api.Worker] = {}
        self._sub = None
        self._poller: asyncio.Task | None = None
        self._closed = False

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(exited_subject(self.spec.run_id), cb=self._on_exit_event)
        try:
            await asyncio.gather(*(self._launch(addr, ranks) for addr, ranks in self._by_node.items()))
        except BaseException:
            await self.terminate(0)
            raise
        self._poller = asyncio.ensure_future(self._poll())

    async def _launch(self, address: str, ranks: list[RankLaunch]) -> None:
        request = api.LaunchWorkersRequest(
            job_id=self.spec.job_id,
            run_id=self.spec.run_id,
            attempt=self.spec.launch_id,
            world_size=self.spec.world_size,
            working_dir=self.spec.working_dir,
        )
        request.common_env.update(self.spec.env)
        request.common_env.update({"MASTER_ADDR": self.spec.master_addr, "MASTER_PORT": str(self.spec.master_port)})
        request.common_env.update(self.spec.secret_env)  # over the agent's authenticated channel only
        argv = list(self.spec.argv)
        # The trainer's worker interpreter (MLMESH_TRAINER_WORKER_PYTHON, or its own) is a path on
        # this host; on the node it is whatever Python the agent runs with.
        if argv and argv[0] in (self._worker_python, sys.executable):
            argv[0] = AGENT_PYTHON
        for r in ranks:
            request.workers.add(
                rank=r.rank,
                local_rank=r.local_rank,
                command=argv,
                device_ids=list(r.device_ids),
                log_path=f"{self.spec.run_id}/rank-{r.rank}.{self.spec.launch_id}.log",
            )
        try:
            reply = await self._stubs[address].LaunchWorkers(request, metadata=self._meta, timeout=RPC_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            raise Unavailable(f"node agent {address} did not start the workers: {err.details()}") from None
        for w in reply.workers:
            self._workers[w.rank] = w
            if w.state == api.WORKER_STATE_FAILED_TO_START:
                raise Unavailable(f"rank {w.rank} failed to start on {address}: {w.message}")

    async def _on_exit_event(self, msg) -> None:
        with contextlib.suppress(Exception):
            e = decode_event(msg, events_pb2.WorkerExited).data
            if e.attempt == self.spec.launch_id:
                code = e.exit_code if e.WhichOneof("termination") == "exit_code" else None
                sig = e.signal if e.WhichOneof("termination") == "signal" else None
                await self._record(e.rank, code, sig)

    async def _record(self, rank: int, code: int | None, sig: int | None) -> None:
        if rank in self._exited:
            return
        self._exited.add(rank)
        await self._exits.put(WorkerExit(rank, code, sig, await self._log_tail(rank)))

    async def _log_tail(self, rank: int) -> str:
        r = next((x for x in self.spec.ranks if x.rank == rank), None)
        if r is None:
            return ""
        request = api.StreamWorkerLogsRequest(run_id=self.spec.run_id, rank=rank, offset_bytes=-8192)
        chunks: list[bytes] = []
        with contextlib.suppress(Exception):
            async for part in self._stubs[r.agent_address].StreamWorkerLogs(request, metadata=self._meta, timeout=5):
                chunks.append(part.data)
        return b"".join(chunks).decode("utf-8", "replace")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            for _address, stub in self._stubs.items():
                try:
                    reply = await stub.GetWorkers(
                        api.GetWorkersRequest(run_id=self.spec.run_id, include_exited=True),
                        metadata=self._meta,
                        timeout=5,
                    )
                except grpc.aio.AioRpcError:
                    continue  # an unreachable agent: the heartbeat check decides
                for w in reply.workers:
                    if w.attempt != self.spec.launch_id:
                        continue
                    self._workers[w.rank] = w
                    if w.state == api.WORKER_STATE_EXITED:
                        await self._record(
                            w.rank,
                            w.exit_code if w.HasField("exit_code") else None,
                            w.signal if w.HasField("signal") else None,
                        )

    async def next_exit(self) -> WorkerExit:
        return await self._exits.get()

    def alive(self) -> set[int]:
        return {r.rank for r in self.spec.ranks} - self._exited

    def statuses(self) -> list[run_pb2.WorkerStatus]:
        out = []
        for r in self.spec.ranks:
            w = self._workers.get(r.rank)
            s = run_pb2.WorkerStatus(rank=r.rank, node_id=r.node_id, alive=r.rank not in self._exited)
            if w is not None:
                s.pid, s.log_path = w.pid, w.log_path
                if w.HasField("exit_code"):
                    s.exit_code = w.exit_code
                if w.HasField("signal"):
                    s.signal = w.signal
            out.append(s)
        return out

    async def terminate(self, grace_s: float) -> None:
        if self._closed:  # the channels are gone; a second call (the run's cleanup) has nothing to do
            return
        self._closed = True
        request = api.StopWorkersRequest(run_id=self.spec.run_id)
        request.grace_period.FromTimedelta(timedelta(seconds=grace_s))
        calls = [
            stub.StopWorkers(request, metadata=self._meta, timeout=grace_s + RPC_TIMEOUT_S)
            for stub in self._stubs.values()
        ]
        for result in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(result, Exception):
                log.warning("StopWorkers for run %s failed: %s", self.spec.run_id, result)
                continue
            # The ranks stopped here are not reported as exits; record them, or the run's final
            # record would show them alive, with no exit code or signal.
            for w in result.workers:
                if w.attempt == self.spec.launch_id:
                    self._workers[w.rank] = w
                    if w.state in (api.WORKER_STATE_EXITED, api.WORKER_STATE_FAILED_TO_START):
                        self._exited.add(w.rank)
        if self._poller is not None:
            self._poller.cancel()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        for channel in self._channels.values():
            await channel.close()


class AgentsExecutor:
    kind = run_pb2.EXECUTOR_KIND_AGENTS

    def __init__(self, nc, token: str, worker_python: str = sys.executable):
        self._nc = nc
        self._token = token
        self._worker_python = worker_python

    async def launch(self, spec: LaunchSpec) -> AgentGroup:
        missing = [r.rank for r in spec.ranks if not r.agent_address]
        if missing:  # no placement (or a node without an agent): nowhere to start these ranks
            raise InvalidArgument.field("placement", f"rank(s) {missing} have no node agent address")
        group = AgentGroup(spec, self._nc, self._token, self._worker_python)
        await group.start()
        return group
