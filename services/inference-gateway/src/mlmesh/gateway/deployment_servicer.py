"""DeploymentService: create, read, update and delete deployments of the caller's team.

Another team's deployment answers NOT_FOUND. Writes need the developer role (services and admins
hold it too); a create or update answers once the record is stored, or, with `wait_ready`, once the
rollout ended within the call's deadline.
"""

from __future__ import annotations

import grpc

from mlmesh.api.gateway.v1 import deployment_service_pb2 as api
from mlmesh.api.gateway.v1 import deployment_service_pb2_grpc
from mlmesh.common.auth import ROLE_DEVELOPER, current_identity
from mlmesh.common.clock import duration_s
from mlmesh.common.errors import InvalidArgument, NotFound
from mlmesh.gateway.deployments import DeploymentController
from mlmesh.gateway.domain import deployments as dom

DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_DRAIN_S = 3600.0


def _team(requested: str) -> str:
    ident = current_identity()
    team = requested or ident.team
    if not ident.can_access(team):
        raise NotFound(f"team {team} not found")
    return team


def _remaining(context: grpc.aio.ServicerContext, default: float = 60.0) -> float:
    remaining = context.time_remaining()
    return default if remaining is None else max(0.0, remaining - 0.2)


class DeploymentServicer(deployment_service_pb2_grpc.DeploymentServiceServicer):
    def __init__(self, controller: DeploymentController):
        self.c = controller

    async def CreateDeployment(self, request: api.CreateDeploymentRequest, context) -> api.CreateDeploymentResponse:
        ident = current_identity()
        ident.require_role(ROLE_DEVELOPER)
        bad = dom.validate_create(request.name, request.team, request.spec, dict(request.labels))
        if bad:
            raise InvalidArgument("invalid CreateDeployment request", bad)
        team = _team(request.team)
        deployment = await self.c.create(request.name, team, request.spec, dict(request.labels), ident.subject)
        if request.wait_ready:
            task = self.c.task(team, request.name)
            if task is not None:
                await self.c.wait(task, _remaining(context))
            deployment = self.c.get(team, request.name)
        return api.CreateDeploymentResponse(deployment=deployment)

    async def GetDeployment(self, request: api.GetDeploymentRequest, context) -> api.GetDeploymentResponse:
        return api.GetDeploymentResponse(deployment=self.c.get(_team(request.team), _name(request.name)))

    async def ListDeployments(self, request: api.ListDeploymentsRequest, context) -> api.ListDeploymentsResponse:
        bad: dict[str, str] = {}
        if not 0 <= request.page_size <= MAX_PAGE:
            bad["page_size"] = f"must be 0-{MAX_PAGE}"
        if request.page_token and not dom.valid_name(request.page_token):
            bad["page_token"] = "not a token from a previous response"
        if bad:
            raise InvalidArgument("invalid ListDeployments request", bad)
        ident = current_identity()
        team = request.team or ident.team
        if not ident.can_access(team):
            return api.ListDeploymentsResponse()  # another team's deployments are simply not there
        found = [dep for dep in self.c.list(team, request.model_name) if dep.meta.id > request.page_token]
        size = request.page_size or DEFAULT_PAGE
        page = found[:size]
        token = page[-1].meta.id if len(found) > size else ""
        return api.ListDeploymentsResponse(deployments=page, next_page_token=token)

    async def UpdateDeployment(self, request: api.UpdateDeploymentRequest, context) -> api.UpdateDeploymentResponse:
        ident = current_identity()
        ident.require_role(ROLE_DEVELOPER)
        name = _name(request.name)
        team = _team(request.team)
        try:
            deployment = await self.c.update(
                team, name, request.spec, list(request.update_mask.paths), request.expected_revision
            )
        except ValueError as exc:
            raise InvalidArgument.field("update_mask", f"not fields of DeploymentSpec: {exc}") from None
        return api.UpdateDeploymentResponse(deployment=deployment)

    async def DeleteDeployment(self, request: api.DeleteDeploymentRequest, context) -> api.DeleteDeploymentResponse:
        ident = current_identity()
        ident.require_role(ROLE_DEVELOPER)
        name = _name(request.name)
        drain = None
        if request.HasField("drain_timeout"):
            drain = duration_s(request.drain_timeout, "drain_timeout")
            if not 0 <= drain <= MAX_DRAIN_S:
                raise InvalidArgument.field("drain_timeout", f"must be 0-{MAX_DRAIN_S:.0f}s")
        team = _team(request.team)
        before = self.c.get(team, name)
        task = await self.c.delete(team, name, drain)
        await self.c.wait(task, _remaining(context))
        try:
            deployment = self.c.get(team, name)
        except NotFound:  # gone: answer with the last state
            deployment = before
            deployment.status.state = dom.S.DEPLOYMENT_STATE_DELETED
            deployment.status.reason = "Drained"
        return api.DeleteDeploymentResponse(deployment=deployment)


def _name(name: str) -> str:
    if not name:
        raise InvalidArgument.field("name", "is required")
    if not dom.valid_name(name):
        raise NotFound(f"deployment {name} not found")
    return name
