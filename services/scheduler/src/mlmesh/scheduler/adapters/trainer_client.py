"""Dispatch to the trainer: StartRun for admitted jobs, StopRun for cancelled or preempted ones."""

from __future__ import annotations

from datetime import timedelta

from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.api.trainer.v1 import trainer_service_pb2, trainer_service_pb2_grpc
from mlmesh.common import tracing

RPC_TIMEOUT_S = 10.0


class TrainerClient:
    def __init__(self, address: str, token: str):
        self._channel = tracing.traced_aio_channel(address)  # StartRun carries the job's trace
        self._stub = trainer_service_pb2_grpc.TrainerServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)

    async def start_run(self, job: job_pb2.Job) -> str:
        reply = await self._stub.StartRun(
            trainer_service_pb2.StartRunRequest(
                job_id=job.meta.id,
                team=job.meta.team,
                attempt=job.status.attempt,
                spec=job.spec,
                placement=job.status.placement,
                resume_from_checkpoint=job.status.outputs.checkpoint_artifact_id,
            ),
            metadata=self._metadata,
            timeout=RPC_TIMEOUT_S,
        )
        return reply.run.run_id

    async def stop_run(self, run_id: str, *, checkpoint: bool, reason: str, grace_s: float = 120.0) -> None:
        request = trainer_service_pb2.StopRunRequest(run_id=run_id, checkpoint=checkpoint, reason=reason)
        request.grace_period.FromTimedelta(timedelta(seconds=grace_s))
        await self._stub.StopRun(request, metadata=self._metadata, timeout=RPC_TIMEOUT_S)

    async def close(self) -> None:
        await self._channel.close()
