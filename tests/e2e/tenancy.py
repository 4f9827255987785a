"""One object of each kind a team owns, made on the live mesh for the cross-team matrix: a queue
(by an admin), a pipeline and its failing step (so a run, a trace and a team alert follow), an open
upload, a model artifact, a checkpoint of the step, a registry model with an alias, a deployment of
it, and a worker on the node agent.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import grpc
from google.protobuf import duration_pb2

from mlmesh.api.common.v1 import common_pb2
from mlmesh.api.fabric.v1 import node_agent_service_pb2 as agent_api
from mlmesh.api.fabric.v1 import node_agent_service_pb2_grpc as agent_grpc
from mlmesh.api.gateway.v1 import deployment_pb2
from mlmesh.api.gateway.v1 import deployment_service_pb2 as dep_api
from mlmesh.api.gateway.v1 import deployment_service_pb2_grpc as dep_grpc
from mlmesh.api.scheduler.v1 import job_pb2, queue_pb2
from mlmesh.api.scheduler.v1 import scheduler_service_pb2 as sched_api
from mlmesh.api.scheduler.v1 import scheduler_service_pb2_grpc as sched_grpc
from mlmesh.api.storage.v1 import artifact_pb2, model_registry_pb2
from mlmesh.api.storage.v1 import model_registry_service_pb2 as reg_api
from mlmesh.api.storage.v1 import model_registry_service_pb2_grpc as reg_grpc
from mlmesh.api.storage.v1 import storage_service_pb2 as st_api
from mlmesh.api.storage.v1 import storage_service_pb2_grpc as st_grpc
from mlmesh.api.telemetry.v1 import telemetry_service_pb2 as tel_api
from mlmesh.api.telemetry.v1 import telemetry_service_pb2_grpc as tel_grpc
from tests.e2e.surface import bearer

TIMEOUT = 10.0


@dataclass
class TeamObjects:
    team: str
    queue: str = ""
    pipeline_id: str = ""
    job_id: str = ""  # the pipeline's step
    run_id: str = ""
    trace_id: str = ""
    alert_id: str = ""
    upload_id: str = ""  # open, never committed
    upload_request_id: str = ""
    artifact_id: str = ""  # a committed model artifact
    artifact_name: str = ""
    checkpoint_id: str = ""
    model: str = ""
    model_version: int = 0
    alias: str = "prod"
    deployment: str = ""
    worker_run_id: str = ""  # a worker on the node agent
    missing: list[str] = field(default_factory=list)  # what could not be made, and why

    def ids(self) -> set[str]:
        """Every identifier of the team's objects (and the team itself): none may reach another team."""
        values = {
            self.team,
            self.queue,
            self.pipeline_id,
            self.job_id,
            self.run_id,
            self.trace_id,
            self.alert_id,
            self.upload_id,
            self.artifact_id,
            self.checkpoint_id,
            self.model,
            self.deployment,
            self.worker_run_id,
        }
        return {v for v in values if v}


class Stubs:
    def __init__(self, mesh):
        self._channels = {name: grpc.insecure_channel(ep["grpc"]) for name, ep in mesh.services.items()}
        self.scheduler = sched_grpc.SchedulerServiceStub(self._channels["scheduler"])
        self.storage = st_grpc.StorageServiceStub(self._channels["storage"])
        self.registry = reg_grpc.ModelRegistryServiceStub(self._channels["storage"])
        self.deployments = dep_grpc.DeploymentServiceStub(self._channels["inference-gateway"])
        self.telemetry = tel_grpc.TelemetryServiceStub(self._channels["telemetry"])
        self.agent = agent_grpc.NodeAgentServiceStub(self._channels["fabric-agent"])

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


def _wait(what: str, probe, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _command_step(argv: list[str]) -> job_pb2.JobSpec:
    spec = job_pb2.JobSpec(kind=job_pb2.JOB_KIND_COMMAND)
    spec.workers.count = 1
    spec.workers.resources.cpu_millis = 100
    spec.workers.resources.memory_bytes = 64 << 20
    spec.command.command.extend(argv)
    spec.retry.max_retries = 0
    return spec


def upload(stubs: Stubs, md, draft: st_api.ArtifactDraft, files: dict[str, bytes], request_id: str = "") -> str:
    """Begin, stream and commit an artifact; its id."""
    entries = [
        artifact_pb2.FileEntry(path=p, size_bytes=len(b), sha256=hashlib.sha256(b).hexdigest())
        for p, b in files.items()
    ]
    begun = stubs.storage.BeginUpload(
        st_api.BeginUploadRequest(artifact=draft, request_id=request_id, expected_files=entries),
        metadata=md,
        timeout=TIMEOUT,
    )
    chunks = [
        st_api.UploadChunksRequest(upload_id=begun.upload_id, path=p, offset_bytes=0, data=b, last_chunk=True)
        for p, b in files.items()
    ]
    stubs.storage.UploadChunks(iter(chunks), metadata=md, timeout=TIMEOUT)
    manifest = artifact_pb2.Manifest(files=entries, total_size_bytes=sum(len(b) for b in files.values()))
    committed = stubs.storage.CommitArtifact(
        st_api.CommitArtifactRequest(upload_id=begun.upload_id, manifest=manifest), metadata=md, timeout=TIMEOUT
    )
    return committed.artifact.meta.id


def create_team_objects(mesh, team: str, prefix: str) -> TeamObjects:
    objs = TeamObjects(team=team)
    admin, dev = bearer(mesh.admin_token), bearer(mesh.token(team))
    stubs = Stubs(mesh)
    try:
        _queue_and_pipeline(stubs, admin, dev, objs, prefix)
        _storage_and_registry(stubs, dev, objs, prefix)
        _deployment(stubs, dev, objs, prefix)
        _agent_worker(stubs, mesh, objs, prefix)
        _run_trace_alert(stubs, admin, dev, objs)
    finally:
        stubs.close()
    return objs


def _queue_and_pipeline(stubs: Stubs, admin, dev, objs: TeamObjects, prefix: str) -> None:
    objs.queue = f"{prefix}-q"
    spec = queue_pb2.QueueSpec(team=objs.team, team_default=True)
    spec.nominal_quota.cpu_millis = 4000
    spec.nominal_quota.memory_bytes = 8 << 30
    stubs.scheduler.CreateQueue(
        sched_api.CreateQueueRequest(name=objs.queue, spec=spec), metadata=admin, timeout=TIMEOUT
    )
    # Steps that fail at once: a run, a trace, and the team's job-failure alert (which needs three
    # finished jobs: the pipeline and its two steps). The second one starts no process at all.
    pipeline = job_pb2.JobSpec(name=f"{prefix}-pipeline", kind=job_pb2.JOB_KIND_PIPELINE, queue=objs.queue)
    pipeline.pipeline.steps.add(name="fail", spec=_command_step(["python", "-c", "raise SystemExit(3)"]))
    pipeline.pipeline.steps.add(name="missing", spec=_command_step(["/nonexistent/mlmesh-e2e"]))
    submitted = stubs.scheduler.SubmitJob(sched_api.SubmitJobRequest(spec=pipeline), metadata=dev, timeout=TIMEOUT)
    objs.pipeline_id = submitted.job.meta.id
    children = stubs.scheduler.ListJobs(
        sched_api.ListJobsRequest(parent_job_id=objs.pipeline_id), metadata=dev, timeout=TIMEOUT
    ).jobs
    objs.job_id = next(j.meta.id for j in children if j.pipeline_step == "fail")


def _storage_and_registry(stubs: Stubs, dev, objs: TeamObjects, prefix: str) -> None:
    objs.artifact_name = f"{prefix}-weights"
    model_draft = st_api.ArtifactDraft(name=objs.artifact_name, kind=artifact_pb2.ARTIFACT_KIND_MODEL)
    objs.artifact_id = upload(stubs, dev, model_draft, {"adapter_config.json": b'{"peft_type": "LORA"}'})
    ckpt = st_api.ArtifactDraft(name=f"{prefix}-ckpt", kind=artifact_pb2.ARTIFACT_KIND_CHECKPOINT)
    ckpt.checkpoint.job_id = objs.job_id
    ckpt.checkpoint.step = 10
    ckpt.checkpoint.retention.keep_latest = 5
    objs.checkpoint_id = upload(stubs, dev, ckpt, {"state.bin": b"team checkpoint"})
    objs.upload_request_id = f"{prefix}-open"
    begun = stubs.storage.BeginUpload(
        st_api.BeginUploadRequest(
            artifact=st_api.ArtifactDraft(name=f"{prefix}-open", kind=artifact_pb2.ARTIFACT_KIND_GENERIC),
            request_id=objs.upload_request_id,
        ),
        metadata=dev,
        timeout=TIMEOUT,
    )
    objs.upload_id = begun.upload_id

    objs.model = f"{prefix}-model"
    # An adapter over a builtin without pretrained weights: registered like any version, and its
    # deployment fails fast (no Triton load), which is all the matrix needs of it.
    mv = model_registry_pb2.ModelVersion(
        name=objs.model,
        artifact_id=objs.artifact_id,
        weights_kind=model_registry_pb2.WEIGHTS_KIND_ADAPTER,
        base_model="builtin:gpt2-tiny",
        adapter_type="lora",
        task=common_pb2.MODEL_TASK_TEXT_GENERATION,
    )
    registered = stubs.registry.RegisterModelVersion(
        reg_api.RegisterModelVersionRequest(model_version=mv, aliases=[objs.alias]), metadata=dev, timeout=TIMEOUT
    )
    objs.model_version = registered.model_version.version


def _deployment(stubs: Stubs, dev, objs: TeamObjects, prefix: str) -> None:
    objs.deployment = f"{prefix}-dep"
    spec = deployment_pb2.DeploymentSpec(task=common_pb2.MODEL_TASK_TEXT_GENERATION)
    spec.model.name = objs.model
    spec.model.alias = objs.alias
    stubs.deployments.CreateDeployment(
        dep_api.CreateDeploymentRequest(name=objs.deployment, spec=spec), metadata=dev, timeout=TIMEOUT
    )


def _agent_worker(stubs: Stubs, mesh, objs: TeamObjects, prefix: str) -> None:
    """A worker of the team's job on the node agent, launched as the trainer's agents executor
    launches them (with the trainer's service token): the local mesh's trainer runs its workers
    itself, so nothing else puts a team's worker on the agent."""
    objs.worker_run_id = f"{prefix}-agent-run"
    request = agent_api.LaunchWorkersRequest(job_id=objs.job_id, run_id=objs.worker_run_id, attempt=1, world_size=1)
    request.workers.add(
        rank=0,
        command=["python", "-c", "print('private team output')"],
        log_path=str(mesh.root / "workers" / f"{objs.worker_run_id}-0.log"),
    )
    stubs.agent.LaunchWorkers(request, metadata=bearer(mesh.service_token("trainer")), timeout=TIMEOUT)


def _run_trace_alert(stubs: Stubs, admin, dev, objs: TeamObjects) -> None:
    def run_id():
        job = stubs.scheduler.GetJob(sched_api.GetJobRequest(job_id=objs.job_id), metadata=dev, timeout=TIMEOUT).job
        return job.status.run_id if job.status.state == job_pb2.JOB_STATE_FAILED else ""

    objs.run_id = _wait(f"step {objs.job_id} to fail", run_id, timeout=90)
    pipeline = stubs.scheduler.GetJob(sched_api.GetJobRequest(job_id=objs.pipeline_id), metadata=dev, timeout=TIMEOUT)
    objs.trace_id = pipeline.job.status.traceparent.split("-")[1] if pipeline.job.status.traceparent else ""
    if objs.trace_id:
        _wait(
            "the pipeline's trace",
            lambda: stubs.telemetry.GetTrace(tel_api.GetTraceRequest(trace_id=objs.trace_id), metadata=dev, timeout=5),
            timeout=30,
        )
    else:
        objs.missing.append("trace: the submit was not traced")

    def alert_id():
        alerts = stubs.telemetry.ListAlerts(
            tel_api.ListAlertsRequest(match_labels={"team": objs.team}), metadata=admin, timeout=TIMEOUT
        ).alerts
        return alerts[0].id if alerts else ""

    try:  # job_failure_rate_high (for 0s) at the next evaluation, every 10 s
        objs.alert_id = _wait("the team's job-failure alert", alert_id, timeout=40)
    except TimeoutError as exc:
        objs.missing.append(f"alert: {exc}")


def duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromSeconds(int(seconds))
    return out
