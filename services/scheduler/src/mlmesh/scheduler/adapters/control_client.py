"""The registry and the gateway, as the control-plane pipeline steps call them (service token)."""

from __future__ import annotations

import asyncio

import grpc

from mlmesh.api.gateway.v1 import deployment_pb2, deployment_service_pb2, deployment_service_pb2_grpc
from mlmesh.api.storage.v1 import (
    model_registry_pb2,
    model_registry_service_pb2,
    model_registry_service_pb2_grpc,
    storage_service_pb2,
    storage_service_pb2_grpc,
)
from mlmesh.common import tracing

RPC_TIMEOUT_S = 30.0
READY = deployment_pb2.DEPLOYMENT_STATE_READY
FAILED = deployment_pb2.DEPLOYMENT_STATE_FAILED


class StepError(Exception):
    """The step cannot succeed (a bad input, a failed load): the step job FAILS with this message."""


class ControlClient:
    def __init__(self, storage_address: str | None, gateway_address: str | None, token: str):
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._channels: list[grpc.aio.Channel] = []
        self.registry = self.artifacts = self.deployments = None
        if storage_address:
            channel = tracing.traced_aio_channel(storage_address)
            self._channels.append(channel)
            self.registry = model_registry_service_pb2_grpc.ModelRegistryServiceStub(channel)
            self.artifacts = storage_service_pb2_grpc.StorageServiceStub(channel)
        if gateway_address:
            channel = tracing.traced_aio_channel(gateway_address)
            self._channels.append(channel)
            self.deployments = deployment_service_pb2_grpc.DeploymentServiceStub(channel)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def artifact_files(self, artifact_id: str) -> list[str]:
        reply = await self.artifacts.GetArtifact(
            storage_service_pb2.GetArtifactRequest(artifact_id=artifact_id), metadata=self._metadata, timeout=10
        )
        return [f.path for f in reply.artifact.manifest.files]

    async def register(
        self, version: model_registry_pb2.ModelVersion, aliases: list[str], request_id: str
    ) -> model_registry_pb2.ModelVersion:
        reply = await self.registry.RegisterModelVersion(
            model_registry_service_pb2.RegisterModelVersionRequest(
                model_version=version, aliases=aliases, request_id=request_id
            ),
            metadata=self._metadata,
            timeout=RPC_TIMEOUT_S,
        )
        return reply.model_version

    async def deploy(
        self, name: str, team: str, spec: deployment_pb2.DeploymentSpec, *, timeout_s: float, at_version
    ) -> deployment_pb2.Deployment:
        """Create the deployment, or roll an existing one to `spec`; then wait until it is READY."""
        try:
            await self.deployments.CreateDeployment(
                deployment_service_pb2.CreateDeploymentRequest(name=name, team=team, spec=spec),
                metadata=self._metadata,
                timeout=RPC_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            current = await self._get(name, team)
            if not at_version(current, spec):
                await self.deployments.UpdateDeployment(
                    deployment_service_pb2.UpdateDeploymentRequest(name=name, team=team, spec=spec),
                    metadata=self._metadata,
                    timeout=RPC_TIMEOUT_S,
                )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            deployment = await self._get(name, team)
            status = deployment.status
            state = status.state
            if state == READY and spec.model.version in (0, status.model_version):  # 0: any version
                return deployment
            if state == FAILED:
                raise StepError(f"deployment {name} failed: {status.reason} {status.message}".strip())
            if loop.time() > deadline:
                raise StepError(f"deployment {name} not READY after {timeout_s:.0f}s (state {state})")
            await asyncio.sleep(1.0)

    async def _get(self, name: str, team: str) -> deployment_pb2.Deployment:
        reply = await self.deployments.GetDeployment(
            deployment_service_pb2.GetDeploymentRequest(name=name, team=team), metadata=self._metadata, timeout=10
        )
        return reply.deployment
