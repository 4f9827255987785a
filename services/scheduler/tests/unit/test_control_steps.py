"""register_model / deploy_model pipeline steps: validation with every bad field named, and the
requests built from the upstream step's spec and outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlmesh.api.common.v1 import common_pb2
from mlmesh.api.gateway.v1 import deployment_pb2
from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.api.storage.v1 import model_registry_pb2
from mlmesh.scheduler.domain import control_steps
from mlmesh.scheduler.domain.validation import Catalog, validate_spec
from mlmesh.sdk.jobspec import load_job_spec

pytestmark = pytest.mark.timeout(30)
CAT = Catalog(queues={"qa": "team-a"}, priority_classes=frozenset())
K = job_pb2.JobKind


def _pipeline(*steps: tuple[str, list[str], job_pb2.JobSpec]) -> job_pb2.JobSpec:
    spec = job_pb2.JobSpec(name="p", kind=K.JOB_KIND_PIPELINE, team="team-a", queue="qa")
    for name, deps, step in steps:
        spec.pipeline.steps.add(name=name, depends_on=deps, spec=step)
    return spec


def _finetune(method=job_pb2.TRAINING_METHOD_LORA) -> job_pb2.JobSpec:
    spec = job_pb2.JobSpec(kind=K.JOB_KIND_FINETUNE)
    spec.workers.count = 1
    spec.workers.resources.cpu_millis = 1000
    spec.trainer.model = "builtin:minilm"
    spec.trainer.dataset = "file:///data.jsonl"
    spec.trainer.method = method
    return spec


def _register(**kw) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(kind=K.JOB_KIND_REGISTER_MODEL, register_model=job_pb2.RegisterModelSpec(**kw))


def _deploy(**kw) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(kind=K.JOB_KIND_DEPLOY_MODEL, deploy_model=job_pb2.DeployModelSpec(**kw))


def test_the_demo_pipeline_is_valid():
    spec = load_job_spec(Path(__file__).resolve().parents[4] / "examples" / "lora-finetune.yaml")
    spec.team, spec.queue = "team-a", "qa"
    assert validate_spec(spec, CAT) == {}


def test_bad_control_steps_name_each_field():
    spec = _pipeline(
        ("train", [], _finetune()),
        ("reg", ["train"], _register(model_name="Bad Name", aliases=["latest"])),
        ("reg2", ["train"], _register(model_name="m", from_step="nope")),
        ("reg3", ["train"], _register(model_name="m", from_step="train", artifact_id="a1")),
        ("dep", ["reg"], _deploy(deployment_name="", from_step="train")),
        ("dep2", ["reg"], _deploy(deployment_name="d")),
    )
    bad = validate_spec(spec, CAT)
    s = "spec.pipeline.steps"
    assert bad == {
        f"{s}[1].spec.register_model.model_name": "required; 1-63 characters of [a-z0-9_-]",
        f"{s}[1].spec.register_model.from_step": "set exactly one of from_step and artifact_id",
        f"{s}[1].spec.register_model.aliases[0]": "1-63 characters of [a-z0-9_-], not 'latest'",
        f"{s}[2].spec.register_model.from_step": "unknown step 'nope'",
        f"{s}[3].spec.register_model.from_step": "set exactly one of from_step and artifact_id",
        f"{s}[4].spec.deploy_model.deployment_name": "required; 1-63 characters of [a-z0-9_-]",
        f"{s}[4].spec.deploy_model.from_step": "step 'train' is a finetune step",
        f"{s}[5].spec.deploy_model.deployment.model.name": "required unless from_step names a register_model step",
    }


def test_from_step_outside_a_pipeline_is_refused():
    spec = _register(model_name="m", from_step="train")
    spec.name, spec.team, spec.queue = "r", "team-a", "qa"
    assert validate_spec(spec, CAT) == {
        "spec.register_model.from_step": "only a pipeline step can take its input from another step"
    }


def _job(spec: job_pb2.JobSpec, job_id: str, step: str) -> job_pb2.Job:
    job = job_pb2.Job(spec=spec, parent_job_id="p1", pipeline_step=step)
    job.meta.id, job.meta.team = job_id, "team-a"
    return job


def test_registration_carries_the_upstream_adapter_metadata():
    source = _job(_finetune(), "p1-train", "train")
    source.status.run_id = "run-1"
    source.status.outputs.model_artifact_id = "art1"
    source.status.outputs.checkpoint_artifact_id = "ck1"
    source.status.outputs.metrics["eval_accuracy"] = 0.9
    job = _job(_register(model_name="topics", from_step="train", aliases=["prod"]), "p1-reg", "reg")
    adapter = control_steps.is_adapter(source.spec.trainer, [])
    version, aliases = control_steps.registration(job, source, adapter)
    assert aliases == ["prod"]
    assert version.artifact_id == "art1" and version.team == "team-a" and version.name == "topics"
    assert version.weights_kind == model_registry_pb2.WEIGHTS_KIND_ADAPTER and version.base_model == "builtin:minilm"
    assert version.task == common_pb2.MODEL_TASK_TEXT_CLASSIFICATION  # MiniLM with no task: a classifier
    assert version.metrics["eval_accuracy"] == 0.9 and version.lineage.job_id == "p1-train"
    assert version.lineage.checkpoint_artifact_id == "ck1"
    source.status.outputs.model_artifact_id = ""
    with pytest.raises(ValueError, match="no model artifact"):
        control_steps.registration(job, source, adapter)


def test_an_unspecified_method_is_told_by_the_artifact():
    trainer = _finetune(job_pb2.TRAINING_METHOD_UNSPECIFIED).trainer
    assert control_steps.is_adapter(trainer, ["adapter/adapter_config.json", "adapter/adapter_model.safetensors"])
    assert not control_steps.is_adapter(trainer, ["model.safetensors", "config.json"])
    assert not control_steps.is_adapter(_finetune(job_pb2.TRAINING_METHOD_FULL).trainer, ["adapter_config.json"])


def test_deployment_is_pinned_to_the_registered_version():
    reg = _job(_register(model_name="topics", from_step="train"), "p1-reg", "reg")
    reg.status.outputs.model_name, reg.status.outputs.model_version = "topics", 3
    deploy = _deploy(deployment_name="topics", from_step="reg")
    deploy.deploy_model.deployment.model.alias = "prod"
    deploy.deploy_model.deployment.task = common_pb2.MODEL_TASK_EMBEDDING
    spec = control_steps.deployment_spec(_job(deploy, "p1-dep", "dep"), reg)
    assert spec.model.name == "topics" and spec.model.version == 3 and spec.task == common_pb2.MODEL_TASK_EMBEDDING
    current = deployment_pb2.Deployment(spec=spec)
    assert control_steps.at_version(current, spec)
    newer = deployment_pb2.DeploymentSpec()
    newer.CopyFrom(spec)
    newer.model.version = 4
    assert not control_steps.at_version(current, newer)
    reg.status.outputs.model_version = 0
    with pytest.raises(ValueError, match="registered no model version"):
        control_steps.deployment_spec(_job(deploy, "p1-dep", "dep"), reg)
