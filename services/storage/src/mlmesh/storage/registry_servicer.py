"""ModelRegistryService: model versions registered from artifacts, and atomically moved aliases.

Wiring (in the storage app's `register(runtime)`):

    store = await RegistryStore.open(runtime.js)          # buckets models, model_records, model_requests
    runtime.on_shutdown.append(store.stop)                 # stops the KV watches
    artifacts = KvArtifactCatalog(await KvRepository.open(runtime.js, "artifacts", artifact_pb2.Artifact, "artifact"))
    servicer = ModelRegistryServicer(store, runtime.publisher, artifacts)
    model_registry_service_pb2_grpc.add_ModelRegistryServiceServicer_to_server(servicer, runtime.server)
    # full service name: "mlmesh.storage.v1.ModelRegistryService"

`ModelRegistryServicer(store, publisher, artifacts)`:
- `store`: a started `RegistryStore` (the registry's KV repositories and their KvIndex mirrors);
- `publisher`: the service's `EventPublisher` (ModelVersionRegistered / ModelAliasChanged);
- `artifacts`: an `ArtifactCatalog`, i.e. `async get(artifact_id) -> Artifact | None` and
  `async set_pinned(artifact_id, pinned)`. `KvArtifactCatalog` reads the `artifacts` bucket and
  pins by CAS on it; pass `pin=False`, or the artifact store's own catalog, if it owns pinning.

Auth: reads need any token of the model's team (or admin / service); registering, aliasing and
deleting also need the `developer` role. Another team's model answers NOT_FOUND.
The logic lives in `mlmesh.storage.registry`; this class maps requests and pages.
"""

from __future__ import annotations

from mlmesh.api.storage.v1 import model_registry_service_pb2 as api
from mlmesh.api.storage.v1 import model_registry_service_pb2_grpc
from mlmesh.common.auth import current_identity
from mlmesh.common.errors import InvalidArgument, PermissionDenied
from mlmesh.common.events import EventPublisher
from mlmesh.storage.registry import ArtifactCatalog, ModelRegistry, RegistryStore, check_name, raise_if

DEFAULT_PAGE = 100
MAX_PAGE = 1000


def _page_size(value: int) -> int:
    size = value or DEFAULT_PAGE
    if not 0 < size <= MAX_PAGE:
        raise InvalidArgument.field("page_size", f"must be 1-{MAX_PAGE}")
    return size


class ModelRegistryServicer(model_registry_service_pb2_grpc.ModelRegistryServiceServicer):
    def __init__(self, store: RegistryStore, publisher: EventPublisher, artifacts: ArtifactCatalog):
        self.registry = ModelRegistry(store, publisher, artifacts)

    async def RegisterModelVersion(self, request, context) -> api.RegisterModelVersionResponse:
        mv = await self.registry.register(
            current_identity(), request.model_version, list(request.aliases), request.request_id
        )
        return api.RegisterModelVersionResponse(model_version=mv)

    async def GetModelVersion(self, request, context) -> api.GetModelVersionResponse:
        mv = await self.registry.get_version(current_identity(), request.name, request.version)
        return api.GetModelVersionResponse(model_version=mv)

    async def DeleteModelVersion(self, request, context) -> api.DeleteModelVersionResponse:
        await self.registry.delete_version(current_identity(), request.name, request.version)
        return api.DeleteModelVersionResponse()

    async def GetModel(self, request, context) -> api.GetModelResponse:
        return api.GetModelResponse(model=await self.registry.get_model(current_identity(), request.name))

    async def ListModels(self, request, context) -> api.ListModelsResponse:
        ident = current_identity()
        team = request.team or ident.team
        bad: dict[str, str] = {}
        check_name(team, "team", bad)
        raise_if(bad, "request")
        if not ident.can_access(team):
            raise PermissionDenied(f"you may only list models of team {ident.team}")
        size = _page_size(request.page_size)
        rows = [m for m in self.registry.list_models(team, request.task) if m.name > request.page_token]
        page = rows[:size]
        token = page[-1].name if len(rows) > size else ""
        return api.ListModelsResponse(models=page, next_page_token=token)

    async def ListModelVersions(self, request, context) -> api.ListModelVersionsResponse:
        ident = current_identity()
        size = _page_size(request.page_size)
        after = None
        if request.page_token:
            if not request.page_token.isdigit():
                raise InvalidArgument.field("page_token", "not a token from a previous response")
            after = int(request.page_token)
        rows = [v for v in await self.registry.list_versions(ident, request.name) if after is None or v.version < after]
        page = rows[:size]
        token = str(page[-1].version) if len(rows) > size else ""
        return api.ListModelVersionsResponse(model_versions=page, next_page_token=token)

    async def SetAlias(self, request, context) -> api.SetAliasResponse:
        mv, previous = await self.registry.set_alias(
            current_identity(), request.name, request.alias, request.version, request.expected_current_version
        )
        return api.SetAliasResponse(model_version=mv, previous_version=previous)

    async def DeleteAlias(self, request, context) -> api.DeleteAliasResponse:
        previous = await self.registry.delete_alias(current_identity(), request.name, request.alias)
        return api.DeleteAliasResponse(previous_version=previous)

    async def ResolveAlias(self, request, context) -> api.ResolveAliasResponse:
        mv = await self.registry.resolve(current_identity(), request.name, request.alias)
        return api.ResolveAliasResponse(model_version=mv)
