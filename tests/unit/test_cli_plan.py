"""`mlmesh plan`: the request it sends and what it prints, against a real in-process gRPC server
(a TrainerService double written for this test, behind mlmesh's own interceptors)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.api.trainer.v1 import run_pb2, trainer_service_pb2_grpc
from mlmesh.api.trainer.v1 import trainer_service_pb2 as api
from mlmesh.cli.output import CliError
from mlmesh.common import errors

pytestmark = pytest.mark.timeout(60)

GiB = 1 << 30

JOB = """
name: ft-tiny
kind: finetune
workers: {count: 2, gpus: 1}
trainer:
  model: builtin:gpt2-tiny
  dataset: file:///data/train.jsonl
  method: lora
  hyperparameters: {global_batch_size: 64, lora: {rank: 8}}
  overrides: {zero_stage: 2}
"""


def canned_plan() -> run_pb2.Plan:
    plan = run_pb2.Plan(
        method=job_pb2.TRAINING_METHOD_LORA,
        zero_stage=2,
        offload_optimizer=run_pb2.OFFLOAD_TARGET_CPU,
        offload_parameters=run_pb2.OFFLOAD_TARGET_NONE,
        precision=job_pb2.PRECISION_BF16,
        micro_batch_size=16,
        gradient_accumulation_steps=2,
        data_parallel_size=2,
        global_batch_size=64,
        gradient_checkpointing=True,
        torch_compile=True,
        lora=job_pb2.LoraConfig(rank=8, alpha=16, dropout=0.0, target_modules=["c_attn"]),
        total_parameters=4_369_152,
        trainable_parameters=49_152,
        memory=run_pb2.MemoryEstimate(
            parameters_bytes=9 << 20,
            gradients_bytes=1 << 20,
            optimizer_bytes=0,
            activations_bytes=3 * GiB,
            overhead_bytes=5 * GiB,
            total_bytes=8 * GiB + (10 << 20),
            device_capacity_bytes=80 * GiB,
            host_offload_bytes=2 << 20,
            fits=True,
        ),
        distributed_backend="nccl",
        warnings=["global batch size 64 instead of 60"],
    )
    plan.decisions.add(field="method", value="LORA", reason="set in trainer.method", overridden=True)
    plan.decisions.add(field="micro_batch_size", value="16", reason="largest power of two that fits [x]")
    plan.deepspeed_config.update({"train_batch_size": 64})
    return plan


class FakeTrainer(trainer_service_pb2_grpc.TrainerServiceServicer):
    def __init__(self):
        self.requests: list[api.PlanRunRequest] = []
        self.error: errors.MlmeshError | None = None

    async def PlanRun(self, request, context):
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return api.PlanRunResponse(plan=canned_plan())


@pytest.fixture
def trainer(threaded_grpc_server) -> FakeTrainer:
    fake = FakeTrainer()
    fake.target = threaded_grpc_server(
        lambda srv: trainer_service_pb2_grpc.add_TrainerServiceServicer_to_server(fake, srv)
    )
    return fake


@pytest.fixture
def cli(trainer, signing_key, monkeypatch, tmp_path):
    from mlmesh.cli.main import app

    monkeypatch.setenv("MLMESH_TRAINER_ADDR", trainer.target)
    monkeypatch.setenv("MLMESH_TOKEN", signing_key.token(subject="alice", team="team-a", roles=["developer"]))
    monkeypatch.setenv("MLMESH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps table cells at the terminal width
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, list(args), catch_exceptions=True)

    return run


@pytest.fixture
def job_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(JOB)
    return path


def test_plan_sends_spec_and_device_and_prints_the_plan(cli, trainer, job_file):
    result = cli(
        "plan", str(job_file), "--gpu-model", "NVIDIA H100 80GB HBM3", "--gpu-memory", "80Gi", "--host-memory", "1Ti"
    )
    assert result.exit_code == 0, result.output
    [request] = trainer.requests
    assert request.spec.name == "ft-tiny" and request.spec.kind == job_pb2.JOB_KIND_FINETUNE
    assert request.spec.workers.count == 2
    assert request.spec.trainer.model == "builtin:gpt2-tiny"
    assert request.spec.trainer.method == job_pb2.TRAINING_METHOD_LORA
    assert request.spec.trainer.hyperparameters.lora.rank == 8
    assert request.spec.trainer.overrides.HasField("zero_stage") and request.spec.trainer.overrides.zero_stage == 2
    assert request.device.gpu_model == "NVIDIA H100 80GB HBM3"
    assert (request.device.gpu_memory_bytes, request.device.host_memory_bytes) == (80 * GiB, 1 << 40)

    out = result.stdout
    assert "plan for ft-tiny (builtin:gpt2-tiny)" in out
    assert "LORA" in out and "BF16" in out
    assert "optimizer cpu, parameters none" in out
    assert "16 micro x 2 accumulation x 2 DP = 64 global" in out
    assert "r=8 alpha=16 dropout=0 targets=c_attn" in out
    assert "4.37M total, 49.2K trainable (1.12%)" in out
    assert "8.0Gi of 80Gi" in out and "host offload (per node)" in out
    assert "set in trainer.method [override]" in out
    assert "largest power of two that fits [x]" in out  # shown as is, not read as markup
    assert "warning: global batch size 64 instead of 60" in out


def test_plan_without_device_flags_leaves_the_device_to_the_trainer(cli, trainer, job_file):
    result = cli("plan", str(job_file))
    assert result.exit_code == 0, result.output
    assert not trainer.requests[0].HasField("device")
    cpu_only = cli("plan", str(job_file), "--host-memory", "16Gi")
    assert cpu_only.exit_code == 0, cpu_only.output
    device = trainer.requests[1].device
    assert (device.gpu_model, device.gpu_memory_bytes, device.host_memory_bytes) == ("", 0, 16 * GiB)


def test_plan_json_is_the_plan_in_proto3_json(cli, job_file):
    result = cli("plan", str(job_file), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["method"] == "TRAINING_METHOD_LORA" and data["zero_stage"] == 2
    assert data["memory"]["total_bytes"] == str(8 * GiB + (10 << 20)) and data["memory"]["fits"] is True
    assert data["deepspeed_config"] == {"train_batch_size": 64}
    assert data["decisions"][0]["overridden"] is True


def test_invalid_yaml_path_is_one_error_and_no_call(cli, trainer, tmp_path):
    missing = cli("plan", str(tmp_path / "nope.yaml"))
    assert isinstance(missing.exception, CliError) and missing.exception.exit_code == 2
    assert "nope.yaml" in missing.exception.message
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: finetune\ntrainer: {model: [\n")
    bad = cli("plan", str(broken))
    assert isinstance(bad.exception, CliError) and "not valid YAML" in bad.exception.message
    assert trainer.requests == []


def test_bad_flags_and_kinds_are_refused_before_calling(cli, trainer, job_file, tmp_path):
    no_memory = cli("plan", str(job_file), "--gpu-model", "H100")
    assert isinstance(no_memory.exception, CliError) and "--gpu-memory" in no_memory.exception.message
    bad_size = cli("plan", str(job_file), "--gpu-memory", "80GG")
    assert isinstance(bad_size.exception, CliError) and bad_size.exception.message.startswith("--gpu-memory: ")
    command = tmp_path / "command.yaml"
    command.write_text("name: c\nkind: command\ncommand: echo hi\n")
    not_training = cli("plan", str(command))
    assert isinstance(not_training.exception, CliError) and "got command" in not_training.exception.message
    assert trainer.requests == []


def test_server_invalid_argument_names_the_field(cli, trainer, job_file):
    trainer.error = errors.InvalidArgument.field("trainer.method", "QLoRA needs a GPU")
    result = cli("plan", str(job_file))
    assert isinstance(result.exception, CliError) and result.exception.exit_code == 1
    assert result.exception.message.startswith("invalid_argument: ")
    assert "trainer.method: QLoRA needs a GPU" in result.exception.message
