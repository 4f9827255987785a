"""Turning a StartRun request into what workers need: local model and dataset paths, the plan,
the device profile and the worker config. The references are resolved through storage."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format

from mlmesh.api.common.v1 import common_pb2
from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.api.trainer.v1 import run_pb2
from mlmesh.api.trainer.v1 import trainer_service_pb2 as api
from mlmesh.common import builtin_models
from mlmesh.common.errors import FailedPrecondition, InvalidArgument
from mlmesh.common.storage_client import StorageClient
from mlmesh.trainer.domain import device_profiles
from mlmesh.trainer.domain.model_shapes import ModelShape, shape_from_hf_config
from mlmesh.trainer.domain.planner import plan_run

CLASSIFICATION_TASKS = (common_pb2.MODEL_TASK_TEXT_CLASSIFICATION, common_pb2.MODEL_TASK_EMBEDDING)


@dataclass
class ResolvedModel:
    ref: str  # what workers load: "builtin:<name>" or a local directory
    shape: ModelShape
    base_model: str  # the reference as the registry records it (lineage / adapter base)


async def resolve_model(ref: str, team: str, storage: StorageClient | None) -> ResolvedModel:
    field = "spec.trainer.model"
    if not ref:
        raise InvalidArgument.field(field, "is required for TRAIN and FINETUNE jobs")
    if builtin_models.is_builtin(ref):
        try:
            cfg = builtin_models.builtin_config(ref)
        except ValueError as exc:
            raise InvalidArgument.field(field, str(exc)) from None
        return ResolvedModel(ref, shape_from_hf_config(cfg), ref)
    if ref.startswith("file://"):
        directory = Path(ref.removeprefix("file://"))
    elif ref.startswith(("artifact://", "model://")):
        if storage is None:
            raise FailedPrecondition(f"{ref}: the trainer has no storage configured")
        if ref.startswith("artifact://"):
            artifact = ref.removeprefix("artifact://")
        else:
            artifact, _ = await storage.resolve_model(ref, team, field)
        directory = await storage.artifact_dir(artifact, team, field)
    else:
        raise InvalidArgument.field(field, "use builtin:<name>, file:///dir, artifact://<id> or model://<name>@<ver>")
    config = directory / "config.json"
    if not await asyncio.to_thread(config.is_file):
        raise InvalidArgument.field(field, f"{ref} has no config.json: not a Hugging Face model directory")
    try:
        shape = shape_from_hf_config(json.loads(await asyncio.to_thread(config.read_text)))
    except (ValueError, KeyError) as exc:
        raise InvalidArgument.field(field, f"unsupported model config: {exc}") from None
    return ResolvedModel(str(directory), shape, ref)


async def resolve_dataset(ref: str, team: str, storage: StorageClient | None) -> tuple[Path, str]:
    """The local jsonl file, and the dataset artifact id (for lineage; empty for files)."""
    field = "spec.trainer.dataset"
    if ref.startswith("file://"):
        path = Path(ref.removeprefix("file://"))
        if not await asyncio.to_thread(path.is_file):
            raise InvalidArgument.field(field, f"{path} does not exist")
        return path, ""
    if ref.startswith("artifact://"):
        if storage is None:
            raise FailedPrecondition(f"{ref}: the trainer has no storage configured")
        artifact = ref.removeprefix("artifact://")
        directory = await storage.artifact_dir(artifact, team, field)
        files = sorted(await asyncio.to_thread(lambda: [p for p in directory.rglob("*.jsonl")]))
        if not files:
            raise InvalidArgument.field(field, f"dataset artifact {artifact} holds no .jsonl file")
        return files[0], artifact
    raise InvalidArgument.field(field, "is required: artifact://<id> or file:///path.jsonl")


def task_name(trainer: job_pb2.TrainerConfig) -> str:
    if trainer.task in CLASSIFICATION_TASKS:
        return "text_classification"
    if trainer.task == common_pb2.MODEL_TASK_TEXT_GENERATION:
        return "text_generation"
    # Unset: an encoder (MiniLM) classifies, anything else generates.
    return "text_classification" if trainer.model == "builtin:minilm" else "text_generation"


def device_for(placement, fabric_nodes: dict[str, dict]) -> tuple[api.DeviceProfile, int]:
    """The device profile of the placement's first worker, and its GPUs per node."""
    for node in placement.nodes:
        for w in node.workers:
            if w.device_ids:
                facts = fabric_nodes.get(node.node_id, {})
                gpn = sum(len(x.device_ids) for x in node.workers)
                return (
                    device_profiles.gpu_profile(
                        facts.get("gpu_model", "unknown GPU"),
                        int(facts.get("gpu_memory_bytes", 80 << 30)),
                        int(facts.get("host_memory_bytes", device_profiles.host_memory_bytes())),
                    ),
                    gpn,
                )
    return device_profiles.local_host_profile(), 0


def make_plan(resolved: ResolvedModel, spec: job_pb2.JobSpec, device, world: int, gpn: int) -> run_pb2.Plan:
    trainer = spec.trainer
    if device.gpu_memory_bytes == 0 and trainer.method == job_pb2.TRAINING_METHOD_QLORA:
        raise InvalidArgument.field(
            "spec.trainer.method", "QLoRA needs a GPU (bitsandbytes 4-bit kernels); this run is placed on CPUs"
        )
    from_scratch = spec.kind == job_pb2.JOB_KIND_TRAIN
    plan = plan_run(resolved.shape, trainer, device, world, gpn, from_scratch=from_scratch)
    if not plan.memory.fits:
        raise FailedPrecondition(
            f"the plan does not fit: {plan.memory.total_bytes / 2**30:.1f} GiB per device needed, "
            f"{plan.memory.device_capacity_bytes / 2**30:.1f} GiB available; see `mlmesh plan`"
        )
    return plan


def proto_json(message) -> dict:
    return json_format.MessageToDict(message)
