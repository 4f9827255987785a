"""TrainerService: StartRun / StopRun for the scheduler; GetRun, ListRuns and PlanRun for users."""

from __future__ import annotations

from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.api.trainer.v1 import run_pb2, trainer_service_pb2_grpc
from mlmesh.api.trainer.v1 import trainer_service_pb2 as api
from mlmesh.common import tracing
from mlmesh.common.auth import ROLE_SERVICE, current_identity
from mlmesh.common.clock import duration_s
from mlmesh.common.errors import InvalidArgument, NotFound
from mlmesh.common.events import is_token
from mlmesh.common.kv import KvRepository
from mlmesh.trainer import preparation
from mlmesh.trainer.controller import RunController
from mlmesh.trainer.domain import device_profiles, runs
from mlmesh.trainer.domain.planner import plan_run

DEFAULT_PAGE = 50
MAX_PAGE = 500
MAX_GRACE_S = 3600.0


def validate_start(request: api.StartRunRequest) -> None:
    bad: dict[str, str] = {}
    if not is_token(request.job_id):
        bad["job_id"] = "is required: 1-128 characters of [a-z0-9_-]"
    if not is_token(request.team):
        bad["team"] = "is required: 1-128 characters of [a-z0-9_-]"
    if request.attempt < 1:
        bad["attempt"] = "must be >= 1"
    spec = request.spec
    if spec.kind not in runs.RUNNABLE_KINDS:
        bad["spec.kind"] = "the trainer runs TRAIN, FINETUNE and COMMAND jobs"
    if spec.kind in runs.TRAINER_KINDS:
        if not spec.trainer.model:
            bad["spec.trainer.model"] = "is required"
        if not spec.trainer.dataset:
            bad["spec.trainer.dataset"] = "is required"
        if spec.trainer.max_restarts < 0:
            bad["spec.trainer.max_restarts"] = "must be >= 0"
    if spec.kind == job_pb2.JOB_KIND_COMMAND and not spec.command.command:
        bad["spec.command.command"] = "is required for COMMAND jobs"
    ranks = sorted(w.rank for n in request.placement.nodes for w in n.workers)
    if ranks and ranks != list(range(len(ranks))):
        bad["placement.nodes"] = "worker ranks must be 0..world_size-1, each once"
    if ranks and request.placement.world_size not in (0, len(ranks)):
        bad["placement.world_size"] = f"is {request.placement.world_size} but the nodes hold {len(ranks)} workers"
    if bad:
        raise InvalidArgument("invalid StartRun request", bad)


class TrainerServicer(trainer_service_pb2_grpc.TrainerServiceServicer):
    def __init__(self, controller: RunController, repo: KvRepository):
        self.controller = controller
        self.repo = repo

    async def _visible(self, run_id: str) -> run_pb2.Run:
        if not run_id:
            raise InvalidArgument.field("run_id", "is required")
        ident = current_identity()
        active = self.controller.active.get(run_id)
        try:
            run = active.snapshot() if active is not None else (await self.repo.get(run_id)).value
        except NotFound:
            raise NotFound(f"run {run_id} not found") from None
        ident.ensure_team(run.team, f"run {run_id}")
        return run

    async def StartRun(self, request, context) -> api.StartRunResponse:
        current_identity().require_role(ROLE_SERVICE)
        validate_start(request)
        tracing.tag(job_id=request.job_id, team=request.team, attempt=request.attempt)
        run = await self.controller.start_run(request)
        return api.StartRunResponse(run=run)

    async def GetRun(self, request, context) -> api.GetRunResponse:
        return api.GetRunResponse(run=await self._visible(request.run_id))

    async def ListRuns(self, request, context) -> api.ListRunsResponse:
        ident = current_identity()
        team = request.team or ident.team
        bad: dict[str, str] = {}
        if not 0 <= request.page_size <= MAX_PAGE:
            bad["page_size"] = f"must be 0-{MAX_PAGE}"
        offset = 0
        if request.page_token:
            if not request.page_token.isdigit():
                bad["page_token"] = "not a token from a previous response"
            else:
                offset = int(request.page_token)
        if bad:
            raise InvalidArgument("invalid ListRuns request", bad)
        if not ident.can_access(team):
            return api.ListRunsResponse()  # another team's runs are simply not there
        found = []
        for key in await self.repo.keys():
            try:
                run = (await self.repo.get(key)).value
            except NotFound:
                continue
            if run.team != team or (request.job_id and run.job_id != request.job_id):
                continue
            if request.states and run.state not in request.states:
                continue
            active = self.controller.active.get(run.run_id)
            found.append(active.snapshot() if active is not None else run)
        found.sort(key=lambda r: (r.create_time.seconds, r.create_time.nanos, r.run_id), reverse=True)
        size = request.page_size or DEFAULT_PAGE
        page = found[offset : offset + size]
        token = str(offset + size) if offset + size < len(found) else ""
        return api.ListRunsResponse(runs=page, next_page_token=token)

    async def StopRun(self, request, context) -> api.StopRunResponse:
        current_identity().require_role(ROLE_SERVICE)
        await self._visible(request.run_id)
        grace = (
            duration_s(request.grace_period, "grace_period")
            if request.HasField("grace_period")
            else self.controller.settings.default_stop_grace_s
        )
        if not 0 <= grace <= MAX_GRACE_S:
            raise InvalidArgument.field("grace_period", f"must be 0-{MAX_GRACE_S:.0f}s")
        run = await self.controller.stop_run(
            request.run_id, checkpoint=request.checkpoint, grace_s=grace, reason=request.reason
        )
        return api.StopRunResponse(run=run)

    async def PlanRun(self, request, context) -> api.PlanRunResponse:
        ident = current_identity()
        spec = request.spec
        if spec.kind not in runs.TRAINER_KINDS:
            raise InvalidArgument.field("spec.kind", "only TRAIN and FINETUNE jobs are planned")
        team = spec.team or ident.team
        ident.ensure_team(team, f"team {team}")
        resolved = await preparation.resolve_model(spec.trainer.model, team, self.controller.storage)
        device = request.device if request.HasField("device") else None
        device = device_profiles.local_host_profile() if device is None else device_profiles.complete_profile(device)
        world = max(1, spec.workers.count)
        gpus = spec.workers.resources.gpus if spec.workers.HasField("resources") else 0
        # Ranks per node when GPUs are asked for: assume they share nodes of up to 8 GPUs.
        per_node = min(world, max(1, 8 // gpus)) if gpus else 0
        from_scratch = spec.kind == job_pb2.JOB_KIND_TRAIN
        plan = plan_run(resolved.shape, spec.trainer, device, world, per_node, from_scratch=from_scratch)
        return api.PlanRunResponse(plan=plan)
