"""Wiring of the trainer: the runs bucket, the storage client, the executor, the run controller
and TrainerService."""

from __future__ import annotations

from collections.abc import Iterable

from mlmesh.api.trainer.v1 import run_pb2, trainer_service_pb2, trainer_service_pb2_grpc
from mlmesh.common import contracts
from mlmesh.common.grpc_server import Runtime
from mlmesh.common.kv import KvRepository
from mlmesh.common.storage_client import StorageClient
from mlmesh.trainer.controller import RunController
from mlmesh.trainer.executors.agents import AgentsExecutor
from mlmesh.trainer.executors.local import LocalExecutor
from mlmesh.trainer.servicer import TrainerServicer
from mlmesh.trainer.settings import TrainerSettings

RUNS_BUCKET = contracts.RUNS


def make_executor(settings: TrainerSettings, runtime: Runtime, token: str):
    if settings.executor == "agents":
        return AgentsExecutor(runtime.nc, token, settings.worker_python)
    if settings.executor == "kubernetes":
        from mlmesh.trainer.executors.kubernetes_group import KubernetesRunExecutor

        return KubernetesRunExecutor(settings)
    return LocalExecutor()


async def register(runtime: Runtime) -> Iterable[str]:
    settings: TrainerSettings = runtime.settings  # type: ignore[assignment]
    repo = await KvRepository.open(runtime.js, RUNS_BUCKET, run_pb2.Run, "run")
    token = settings.service_token_file.read_text().strip() if settings.service_token_file else ""
    storage = StorageClient(settings.storage_address, token) if settings.storage_address else None
    controller = RunController(
        settings, repo, runtime.publisher, runtime.nc, make_executor(settings, runtime, token), storage, token
    )
    await controller.start()
    runtime.on_shutdown.append(controller.stop)
    if storage is not None:
        runtime.on_shutdown.append(storage.close)
    trainer_service_pb2_grpc.add_TrainerServiceServicer_to_server(TrainerServicer(controller, repo), runtime.server)
    return [trainer_service_pb2.DESCRIPTOR.services_by_name["TrainerService"].full_name]
