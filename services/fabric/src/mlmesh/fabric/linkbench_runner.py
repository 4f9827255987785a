"""BenchmarkLinks: a real all-reduce between two nodes, run through their agents.

For each pair the fabric asks agent A for rank 0 and agent B for rank 1 of
`python -m mlmesh.fabric.linkbench` (torch.distributed, gloo or NCCL), rendezvousing at A's
address. It waits for both workers to exit and reads rank 0's JSON line from its log. Pairs run
one after another, so links are never measured while competing with each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from mlmesh.api.fabric.v1 import node_agent_service_pb2 as agent_api
from mlmesh.api.fabric.v1 import node_agent_service_pb2_grpc, node_pb2, topology_pb2
from mlmesh.fabric.agent.workers import AGENT_PYTHON

RPC_TIMEOUT_S = 10.0
DEFAULT_SIZE = 64 << 20
DEFAULT_ITERS = 20
EXITED = (agent_api.WORKER_STATE_EXITED, agent_api.WORKER_STATE_FAILED_TO_START)


def _host(node: node_pb2.Node) -> str:
    return node.agent_address.rpartition(":")[0]


def _gpu(node: node_pb2.Node) -> list[str]:
    return [d.id for d in node.devices if d.kind == node_pb2.DEVICE_KIND_GPU][:1]


def _outcome(w: agent_api.Worker) -> str:
    return f"exit {w.exit_code}" if w.HasField("exit_code") else f"signal {w.signal}"


def default_backend(a: node_pb2.Node, b: node_pb2.Node) -> str:
    return "nccl" if a.capacity.gpus and b.capacity.gpus else "gloo"


class LinkBenchRunner:
    def __init__(self, token: str, timeout_s: float = 300.0):
        self._metadata = (("authorization", f"Bearer {token}"),)
        self.timeout_s = timeout_s

    async def run_pair(
        self, a: node_pb2.Node, b: node_pb2.Node, *, size: int, iters: int, backend: str
    ) -> topology_pb2.LinkBenchmark:
        result = topology_pb2.LinkBenchmark(node_a=a.id, node_b=b.id, backend=backend, message_size_bytes=size)
        now = Timestamp()
        now.GetCurrentTime()
        result.run_time.CopyFrom(now)
        run_id = f"linkbench-{uuid.uuid4().hex[:12]}"
        port = random.randint(20000, 60000)  # the rendezvous port on A; a clash fails only this run
        env = {"MASTER_ADDR": _host(a), "MASTER_PORT": str(port), "NCCL_NVLS_ENABLE": "0"}
        argv = [AGENT_PYTHON, "-m", "mlmesh.fabric.linkbench", "--size-bytes", str(size), "--iters", str(iters)]
        argv += ["--backend", backend, "--timeout-s", str(int(self.timeout_s))]
        stubs = []
        try:
            for rank, node in ((0, a), (1, b)):
                channel = grpc.aio.insecure_channel(node.agent_address)
                stub = node_agent_service_pb2_grpc.NodeAgentServiceStub(channel)
                stubs.append((channel, stub))
                worker = agent_api.WorkerLaunch(rank=rank, local_rank=0, command=argv, env=env)
                if backend == "nccl":
                    worker.device_ids.extend(_gpu(node))
                reply = await stub.LaunchWorkers(
                    agent_api.LaunchWorkersRequest(
                        job_id="linkbench", run_id=run_id, attempt=1, world_size=2, workers=[worker]
                    ),
                    metadata=self._metadata,
                    timeout=RPC_TIMEOUT_S,
                )
                if reply.workers and reply.workers[0].state == agent_api.WORKER_STATE_FAILED_TO_START:
                    raise RuntimeError(f"{node.id}: {reply.workers[0].message}")
            states = await self._wait_exited(run_id, stubs)
            if any((w.HasField("exit_code") and w.exit_code != 0) or w.HasField("signal") for w in states):
                codes = ", ".join(f"rank {w.rank}: {_outcome(w)}" for w in states)
                raise RuntimeError(f"linkbench workers failed ({codes}); see their logs on the agents")
            line = await self._result_line(stubs[0][1], run_id)
            bench = json.loads(line)["linkbench"]
            result.iterations = bench["iters"]
            result.algorithm_bandwidth_bytes_per_second = bench["algbw_gbps"] * 1e9
            result.bus_bandwidth_bytes_per_second = bench["busbw_gbps"] * 1e9
            result.latency_microseconds = bench["latency_s_median"] * 1e6
        except Exception as exc:  # one failed link must not hide the others' results
            result.error = str(exc)[:1000] if not isinstance(exc, grpc.aio.AioRpcError) else exc.details() or ""
            for _, stub in stubs:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await stub.StopWorkers(
                        agent_api.StopWorkersRequest(run_id=run_id), metadata=self._metadata, timeout=RPC_TIMEOUT_S
                    )
        finally:
            for channel, _ in stubs:
                await channel.close()
        return result

    async def _wait_exited(self, run_id: str, stubs) -> list[agent_api.Worker]:
        deadline = time.monotonic() + self.timeout_s
        while True:
            workers = []
            for _, stub in stubs:
                reply = await stub.GetWorkers(
                    agent_api.GetWorkersRequest(run_id=run_id, include_exited=True),
                    metadata=self._metadata,
                    timeout=RPC_TIMEOUT_S,
                )
                workers.extend(reply.workers)
            if len(workers) == len(stubs) and all(w.state in EXITED for w in workers):
                return workers
            if time.monotonic() > deadline:
                raise TimeoutError(f"linkbench {run_id} did not finish in {self.timeout_s:.0f}s")
            await asyncio.sleep(0.2)

    async def _result_line(self, stub, run_id: str) -> str:
        data = b""
        async for chunk in stub.StreamWorkerLogs(
            agent_api.StreamWorkerLogsRequest(run_id=run_id, rank=0), metadata=self._metadata, timeout=RPC_TIMEOUT_S
        ):
            data += chunk.data
        for line in reversed(data.decode(errors="replace").splitlines()):
            if line.startswith('{"linkbench"'):
                return line
        raise RuntimeError("rank 0 printed no result line")
