"""Training runs through TrainerService with real DeepSpeed and peft workers (CPU, gloo, 2 ranks):
LoRA and full fine-tuning, exact resume after a stop, recovery from kill -9, failure classes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import grpc
import pytest

from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.api.storage.v1 import model_registry_service_pb2, model_registry_service_pb2_grpc, storage_service_pb2_grpc
from mlmesh.api.storage.v1 import storage_service_pb2 as sapi
from mlmesh.api.trainer.v1 import run_pb2
from mlmesh.api.trainer.v1 import trainer_service_pb2 as api

pytestmark = pytest.mark.timeout(420)
R = run_pb2


def _lm_spec(services, dataset, steps: int, every: int, method=job_pb2.TRAINING_METHOD_LORA) -> job_pb2.JobSpec:
    spec = services.finetune_spec("builtin:gpt2-tiny", dataset, method=method)
    hp = spec.trainer.hyperparameters
    hp.max_steps, hp.max_seq_length, hp.global_batch_size, hp.seed = steps, 32, 8, 11
    hp.lora.dropout = 0.1  # dropout draws random numbers: resume must restore the RNG too
    spec.trainer.overrides.micro_batch_size = 2  # 2 x 2 accumulation x 2 ranks = 8
    spec.checkpoint.every_n_steps = every
    return spec


def _losses(progress: list[dict]) -> dict[int, float]:
    """step -> loss, the last report of each step winning (a restart repeats steps)."""
    return {p["step"]: p["loss"] for p in progress}


REPO = Path(__file__).resolve().parents[4]


def test_lora_classification_registers_model(services, tmp_path):
    # The real MiniLM weights on the dataset the repo ships (4 topics, eval rows held out).
    data = REPO / "examples" / "data" / "topics.jsonl"
    spec = services.finetune_spec(
        "builtin:minilm", data, method=job_pb2.TRAINING_METHOD_LORA, output_model_name="sentiment"
    )
    spec.trainer.output_aliases.append("candidate")
    hp = spec.trainer.hyperparameters
    hp.max_steps, hp.global_batch_size, hp.learning_rate, hp.max_seq_length = 20, 16, 2e-3, 48
    spec.checkpoint.every_n_steps = 10
    run = services.start_run("lora-job", spec)
    assert run.state == R.RUN_STATE_PENDING and run.run_id == "lora-job-a1"
    again = services.start_run("lora-job", spec)  # idempotent on (job, attempt)
    assert again.run_id == run.run_id
    done = services.wait(run.run_id)
    assert done.state == R.RUN_STATE_SUCCEEDED, (done.reason, done.message, services.worker_logs(run.run_id))
    assert done.plan.method == job_pb2.TRAINING_METHOD_LORA and done.plan.distributed_backend == "gloo"
    out = done.outputs
    assert (
        out.metrics["eval_accuracy"] >= 0.9 > out.metrics["eval_accuracy_before"]
        or out.metrics["eval_accuracy"] > out.metrics["eval_accuracy_before"]
    )
    assert out.model_name == "sentiment" and out.model_version == 1
    assert out.checkpoint_artifact_id and out.model_artifact_id
    progress = services.progress(run.run_id)
    assert [p["step"] for p in progress] == list(range(1, 21))
    assert all(p["tokens_per_second"] > 0 and p["eta_s"] >= 0 for p in progress)
    with grpc.insecure_channel(services.storage_address) as ch:
        registry = model_registry_service_pb2_grpc.ModelRegistryServiceStub(ch)
        mv = registry.GetModelVersion(
            model_registry_service_pb2.GetModelVersionRequest(name="sentiment", version=1),
            metadata=services.md(services.alice),
        ).model_version
        assert mv.team == "team-a" and mv.base_model == "builtin:minilm" and "candidate" in mv.aliases
        assert mv.lineage.job_id == "lora-job" and mv.lineage.run_id == run.run_id
        assert mv.metrics["eval_accuracy"] == pytest.approx(out.metrics["eval_accuracy"])
        storage = storage_service_pb2_grpc.StorageServiceStub(ch)
        model = storage.GetArtifact(
            sapi.GetArtifactRequest(artifact_id=out.model_artifact_id), metadata=services.md(services.alice)
        ).artifact
        names = {f.path for f in model.manifest.files}
        assert {"adapter_model.safetensors", "adapter_config.json", "mlmesh_model.json"} <= names
        ck = storage.GetArtifact(
            sapi.GetArtifactRequest(artifact_id=out.checkpoint_artifact_id), metadata=services.md(services.alice)
        ).artifact
        assert ck.checkpoint.step == 20 and ck.checkpoint.job_id == "lora-job"
        ck_files = {f.path for f in ck.manifest.files}
        assert {"trainer_state.json", "rng/rank-0.pt", "rng/rank-1.pt"} <= ck_files
    # Another team sees nothing.
    with pytest.raises(grpc.RpcError) as err:
        services.get(run.run_id, services.bob)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert services.get(run.run_id, services.alice).state == R.RUN_STATE_SUCCEEDED


def test_full_finetune_and_exact_resume_after_stop(services, tmp_path):
    data = services.text_dataset(tmp_path / "text.jsonl")
    spec = _lm_spec(services, data, steps=8, every=2, method=job_pb2.TRAINING_METHOD_FULL)
    base = services.wait(services.start_run("full-ref", spec).run_id)
    assert base.state == R.RUN_STATE_SUCCEEDED, services.worker_logs(base.run_id)
    assert base.plan.method == job_pb2.TRAINING_METHOD_FULL and base.plan.zero_stage == 2
    reference = _losses(services.progress(base.run_id))
    assert sorted(reference) == list(range(1, 9))

    # Same job, stopped with a checkpoint after step >= 3 (as preemption does), then resumed as the
    # scheduler would: a new attempt starting from the checkpoint the stop reported.
    run = services.start_run("full-resume", spec)
    services.wait(run.run_id, until=lambda r: r.progress.step >= 3)
    request = api.StopRunRequest(run_id=run.run_id, checkpoint=True, reason="Preempted")
    stopping = services.stub.StopRun(request, metadata=services.md(), timeout=60).run
    assert stopping.state in (R.RUN_STATE_STOPPING, R.RUN_STATE_STOPPED)
    stopped = services.wait(run.run_id)
    assert stopped.state == R.RUN_STATE_STOPPED and stopped.reason == "Preempted"
    k = stopped.progress.latest_checkpoint_step
    assert k >= 3 and stopped.outputs.checkpoint_artifact_id, stopped
    if k >= 8:
        pytest.skip("the run finished its steps before the stop landed")
    resumed = services.start_run("full-resume", spec, attempt=2, resume=stopped.outputs.checkpoint_artifact_id)
    done = services.wait(resumed.run_id)
    assert done.state == R.RUN_STATE_SUCCEEDED, services.worker_logs(resumed.run_id)
    assert done.resumed_from_checkpoint == stopped.outputs.checkpoint_artifact_id
    after = _losses(services.progress(resumed.run_id))
    assert sorted(after) == list(range(k + 1, 9))
    for step, loss in after.items():
        assert loss == pytest.approx(reference[step], rel=1e-5, abs=1e-6), step


def test_kill_minus_9_restarts_from_checkpoint_with_identical_losses(services, tmp_path):
    data = services.text_dataset(tmp_path / "text.jsonl")
    spec = _lm_spec(services, data, steps=30, every=4)
    reference = services.wait(services.start_run("kill-ref", spec).run_id)
    assert reference.state == R.RUN_STATE_SUCCEEDED, services.worker_logs(reference.run_id)
    ref_losses = _losses(services.progress(reference.run_id))

    run = services.start_run("kill-job", spec)
    mid = services.wait(run.run_id, until=lambda r: r.progress.latest_checkpoint_step >= 4)
    if mid.progress.step >= 29:
        pytest.skip("the run finished before the kill")
    victim = next(w for w in mid.workers if w.rank == 1 and w.alive)
    killed_at = time.monotonic()
    os.kill(victim.pid, signal.SIGKILL)
    restarting = services.wait(run.run_id, until=lambda r: r.restarts >= 1, timeout=30)
    detected_s = time.monotonic() - killed_at
    assert detected_s < 10, f"the dead rank was noticed after {detected_s:.1f}s"
    assert restarting.failure_class == job_pb2.FAILURE_CLASS_SIGNAL
    done = services.wait(run.run_id)
    assert done.state == R.RUN_STATE_SUCCEEDED, services.worker_logs(run.run_id)
    assert done.restarts == 1 and done.resumed_from_checkpoint
    losses = _losses(services.progress(run.run_id))
    assert sorted(losses) == list(range(1, 31))
    for step in range(1, 31):
        assert losses[step] == pytest.approx(ref_losses[step], rel=1e-5, abs=1e-6), step


def test_user_error_fails_without_restart(services, tmp_path):
    data = services.sentiment_dataset(tmp_path / "sentiment.jsonl")  # no "text" column: a user error
    spec = services.finetune_spec("builtin:gpt2-tiny", data, method=job_pb2.TRAINING_METHOD_LORA)
    spec.trainer.max_restarts = 3
    spec.trainer.hyperparameters.max_steps = 2
    done = services.wait(services.start_run("bad-data", spec).run_id)
    assert done.state == R.RUN_STATE_FAILED
    assert done.failure_class == job_pb2.FAILURE_CLASS_USER_ERROR and done.restarts == 0
    assert "column 'text' is missing" in done.message


def test_bad_requests_and_auth(services, tmp_path):
    data = services.text_dataset(tmp_path / "text.jsonl", rows=30)
    spec = services.finetune_spec("builtin:gpt2-tiny", data)
    with pytest.raises(grpc.RpcError) as err:  # a developer cannot start runs: the scheduler does
        services.stub.StartRun(
            api.StartRunRequest(job_id="j", team="team-a", attempt=1, spec=spec), metadata=services.md(services.alice)
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:
        services.stub.StartRun(api.StartRunRequest(job_id="Bad Id", attempt=0, spec=spec), metadata=services.md())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for name in ("job_id", "team", "attempt"):
        assert name in err.value.details() or name in str(err.value.trailing_metadata())
    with pytest.raises(grpc.RpcError) as err:
        services.stub.GetRun(api.GetRunRequest(run_id="nope-a1"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err:
        services.get("nope-a1")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # An unknown builtin fails the run as the user's error, naming the field.
    bad = services.finetune_spec("builtin:nope", data)
    done = services.wait(services.start_run("bad-model", bad).run_id)
    assert done.state == R.RUN_STATE_FAILED and done.failure_class == job_pb2.FAILURE_CLASS_USER_ERROR
    assert "spec.trainer.model" in done.message
    listed = services.stub.ListRuns(api.ListRunsRequest(), metadata=services.md(services.alice)).runs
    assert [r.run_id for r in listed] == ["bad-model-a1"]
    assert not services.stub.ListRuns(api.ListRunsRequest(), metadata=services.md(services.bob)).runs


def test_plan_run_over_grpc(services):
    spec = job_pb2.JobSpec(name="p", kind=job_pb2.JOB_KIND_FINETUNE)
    spec.trainer.model = "builtin:gpt-1b"
    spec.workers.count = 1
    request = api.PlanRunRequest(spec=spec)
    request.device.gpu_model, request.device.gpu_memory_bytes = "NVIDIA H100 80GB HBM3", 80 << 30
    plan = services.stub.PlanRun(request, metadata=services.md(services.alice)).plan
    assert plan.method == job_pb2.TRAINING_METHOD_LORA
    assert plan.precision == job_pb2.PRECISION_BF16 and plan.distributed_backend == "nccl"
    assert plan.memory.fits and plan.total_parameters > 1_000_000_000
    spec.trainer.method = job_pb2.TRAINING_METHOD_QLORA
    with pytest.raises(grpc.RpcError) as err:
        services.stub.PlanRun(api.PlanRunRequest(spec=spec), metadata=services.md(services.alice))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "trainer.method" in str(err.value.trailing_metadata()) or "trainer.method" in err.value.details()
