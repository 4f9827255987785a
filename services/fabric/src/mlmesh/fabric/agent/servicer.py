"""NodeAgentService: the node agent's worker-control API, over a `WorkerManager`.

Launching and stopping workers runs arbitrary commands on the node, so those two RPCs need the
`service` role (the trainer and fabric call them with service tokens; admins pass too). Listing
workers and reading their logs need it as well: a node runs every team's workers and a worker
carries no team, so a team member could otherwise read another team's jobs and logs.
"""

from __future__ import annotations

import asyncio
import logging
import os

from mlmesh.api.fabric.v1 import node_agent_service_pb2 as api
from mlmesh.api.fabric.v1 import node_agent_service_pb2_grpc
from mlmesh.common.auth import ROLE_SERVICE, current_identity
from mlmesh.common.errors import InvalidArgument, NotFound
from mlmesh.common.events import subject_token
from mlmesh.fabric.agent.workers import DEFAULT_GRACE_S, WorkerManager

log = logging.getLogger("mlmesh.fabric.agent.api")

LOG_CHUNK_BYTES = 64 * 1024
MAX_GRACE_S = 3600.0
FOLLOW_POLL_S = 0.1


class NodeAgentServicer(node_agent_service_pb2_grpc.NodeAgentServiceServicer):
    def __init__(
        self,
        manager: WorkerManager,
        *,
        default_grace_s: float = DEFAULT_GRACE_S,
        follow_poll_s: float = FOLLOW_POLL_S,
    ):
        self.manager = manager
        self.default_grace_s = default_grace_s
        self.follow_poll_s = follow_poll_s

    async def LaunchWorkers(self, request: api.LaunchWorkersRequest, context) -> api.LaunchWorkersResponse:
        current_identity().require_role(ROLE_SERVICE)
        workers = await self.manager.launch(request)
        return api.LaunchWorkersResponse(workers=[w.to_proto() for w in workers])

    async def StopWorkers(self, request: api.StopWorkersRequest, context) -> api.StopWorkersResponse:
        current_identity().require_role(ROLE_SERVICE)
        grace_s = self.default_grace_s
        if request.HasField("grace_period"):
            grace_s = request.grace_period.ToNanoseconds() / 1e9
            if not 0 <= grace_s <= MAX_GRACE_S:
                raise InvalidArgument.field("grace_period", f"must be between 0 and {MAX_GRACE_S:.0f} seconds")
        if any(r < 0 for r in request.ranks):
            raise InvalidArgument.field("ranks", "ranks must be >= 0")
        workers = await self.manager.stop(request.run_id, list(request.ranks), grace_s)
        return api.StopWorkersResponse(workers=[w.to_proto() for w in workers])

    async def GetWorkers(self, request: api.GetWorkersRequest, context) -> api.GetWorkersResponse:
        current_identity().require_role(ROLE_SERVICE)
        workers = self.manager.list(request.run_id, request.job_id, request.include_exited)
        return api.GetWorkersResponse(workers=[w.to_proto() for w in workers])

    async def StreamWorkerLogs(self, request: api.StreamWorkerLogsRequest, context):
        """The log from `offset_bytes` (negative: from that many bytes before the end), in chunks of
        at most 64 KiB; with `follow`, new output until the worker has exited and the file is read
        to its end."""
        current_identity().require_role(ROLE_SERVICE)
        subject_token(request.run_id, "run_id")
        worker = self.manager.get(request.run_id, request.rank)
        try:
            f = await asyncio.to_thread(open, worker.log_path, "rb")  # closed below, across yields
        except FileNotFoundError:
            raise NotFound(f"the log of rank {request.rank} of run {request.run_id} is gone") from None
        try:
            size = os.fstat(f.fileno()).st_size
            offset = max(0, size + request.offset_bytes) if request.offset_bytes < 0 else request.offset_bytes
            f.seek(offset)
            while True:
                gone = worker.exited  # read before the read: gone + nothing read = drained
                data = await asyncio.to_thread(f.read, LOG_CHUNK_BYTES)
                if data:
                    yield api.StreamWorkerLogsResponse(offset_bytes=offset, data=data)
                    offset += len(data)
                    continue
                if not request.follow or gone:
                    return
                await worker.wait(self.follow_poll_s)
        finally:
            f.close()
