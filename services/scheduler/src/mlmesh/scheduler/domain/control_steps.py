"""Control-plane pipeline steps: register a model version, deploy one. Pure: validation and the
requests the controller sends to the registry and the gateway.

- `register_model` registers the model artifact of an upstream training step (`from_step`) or a
  given artifact. The version's metadata (adapter or full weights, base model, task, metrics,
  lineage) comes from that step's spec and outputs, as the trainer's own registration does.
- `deploy_model` creates the gateway deployment, or rolls an existing one of the same name to the
  new version; `from_step` takes the version an upstream `register_model` step registered.
Both are idempotent on retry: the registration carries the step's job id as its request id, and a
deployment already at the version is left as it is.
"""

from __future__ import annotations

import re

from mlmesh.api.common.v1 import common_pb2
from mlmesh.api.gateway.v1 import deployment_pb2
from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.api.storage.v1 import model_registry_pb2

K = job_pb2.JobKind
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
ADAPTER_METHODS = (job_pb2.TRAINING_METHOD_LORA, job_pb2.TRAINING_METHOD_QLORA)
CONTROL_KINDS = frozenset({K.JOB_KIND_REGISTER_MODEL, K.JOB_KIND_DEPLOY_MODEL})


def validate(spec: job_pb2.JobSpec, field: str, steps: dict[str, job_pb2.JobSpec] | None) -> dict[str, str]:
    """Problems of a control-plane step, by field path. `steps` are the pipeline's step specs by
    name (None outside a pipeline, where `from_step` cannot be used)."""
    bad: dict[str, str] = {}
    if spec.kind == K.JOB_KIND_REGISTER_MODEL:
        r = spec.register_model
        f = field + "register_model"
        if not NAME.fullmatch(r.model_name):
            bad[f + ".model_name"] = "required; 1-63 characters of [a-z0-9_-]"
        if bool(r.artifact_id) == bool(r.from_step):
            bad[f + ".from_step"] = "set exactly one of from_step and artifact_id"
        elif r.from_step:
            _from_step(r.from_step, steps, (K.JOB_KIND_TRAIN, K.JOB_KIND_FINETUNE), f + ".from_step", bad)
        for i, alias in enumerate(r.aliases):
            if not NAME.fullmatch(alias) or alias == "latest":
                bad[f"{f}.aliases[{i}]"] = "1-63 characters of [a-z0-9_-], not 'latest'"
    elif spec.kind == K.JOB_KIND_DEPLOY_MODEL:
        d = spec.deploy_model
        f = field + "deploy_model"
        if not NAME.fullmatch(d.deployment_name):
            bad[f + ".deployment_name"] = "required; 1-63 characters of [a-z0-9_-]"
        if d.from_step:
            _from_step(d.from_step, steps, (K.JOB_KIND_REGISTER_MODEL,), f + ".from_step", bad)
        elif not d.deployment.model.name:
            bad[f + ".deployment.model.name"] = "required unless from_step names a register_model step"
    if spec.HasField("workers") and spec.workers.count:
        bad[field + "workers"] = "control-plane steps run no workers"
    return bad


def _from_step(name: str, steps, kinds, field: str, bad: dict[str, str]) -> None:
    if steps is None:
        bad[field] = "only a pipeline step can take its input from another step"
    elif name not in steps:
        bad[field] = f"unknown step {name!r}"
    elif steps[name].kind not in kinds:
        bad[field] = f"step {name!r} is a {K.Name(steps[name].kind).removeprefix('JOB_KIND_').lower()} step"


def is_adapter(trainer: job_pb2.TrainerConfig, artifact_files: list[str]) -> bool:
    """LoRA/QLoRA weights need their base model to load. With the method left to the trainer's
    planner, the artifact tells: peft writes `adapter_config.json`."""
    if trainer.method in ADAPTER_METHODS:
        return True
    if trainer.method == job_pb2.TRAINING_METHOD_FULL:
        return False
    return any(path.rsplit("/", 1)[-1] == "adapter_config.json" for path in artifact_files)


def task_of(trainer: job_pb2.TrainerConfig) -> int:
    """The trainer's own rule: an unset task means an encoder (MiniLM) classifies, others generate."""
    if trainer.task:
        return trainer.task
    if trainer.model == "builtin:minilm":
        return common_pb2.MODEL_TASK_TEXT_CLASSIFICATION
    return common_pb2.MODEL_TASK_TEXT_GENERATION


def registration(
    job: job_pb2.Job, source: job_pb2.Job | None, adapter: bool = False
) -> tuple[model_registry_pb2.ModelVersion, list[str]]:
    """The version to register and its aliases. `source` is the `from_step` job (succeeded);
    `adapter` whether its artifact holds adapter weights (see `is_adapter`)."""
    r = job.spec.register_model
    version = model_registry_pb2.ModelVersion(
        name=r.model_name, team=job.meta.team, description=r.description, framework="transformers"
    )
    if source is None:
        version.artifact_id = r.artifact_id
        version.weights_kind = model_registry_pb2.WEIGHTS_KIND_FULL
        return version, list(r.aliases)
    out, trainer = source.status.outputs, source.spec.trainer
    if not out.model_artifact_id:
        raise ValueError(f"step {source.pipeline_step!r} produced no model artifact")
    version.artifact_id = out.model_artifact_id
    version.base_model = trainer.model
    version.task = task_of(trainer)
    if adapter:
        version.weights_kind = model_registry_pb2.WEIGHTS_KIND_ADAPTER
        version.adapter_type = "lora"
    else:
        version.weights_kind = model_registry_pb2.WEIGHTS_KIND_FULL
    version.metrics.update(dict(out.metrics))
    version.lineage.job_id = source.meta.id
    version.lineage.run_id = source.status.run_id
    version.lineage.checkpoint_artifact_id = out.checkpoint_artifact_id
    version.properties["pipeline_job"] = job.parent_job_id
    return version, list(r.aliases)


def deployment_spec(job: job_pb2.Job, source: job_pb2.Job | None) -> deployment_pb2.DeploymentSpec:
    """The deployment's spec; with `from_step`, pinned to the version that step registered."""
    spec = deployment_pb2.DeploymentSpec()
    spec.CopyFrom(job.spec.deploy_model.deployment)
    if source is not None:
        out = source.status.outputs
        if not out.model_name or not out.model_version:
            raise ValueError(f"step {source.pipeline_step!r} registered no model version")
        spec.model.name = out.model_name
        spec.model.version = out.model_version
    return spec


def at_version(deployment: deployment_pb2.Deployment, spec: deployment_pb2.DeploymentSpec) -> bool:
    """Whether an existing deployment already serves what `spec` asks (a retried step)."""
    return deployment.spec.model == spec.model and deployment.spec.task == spec.task
