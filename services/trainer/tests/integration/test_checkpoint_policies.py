"""Checkpoint policies through TrainerService with real workers (CPU, gloo, 2 ranks): time-based
checkpoints committed in the background, storage's keep-latest retention over them, and an exact
resume from a checkpoint that was committed in the background."""

from __future__ import annotations

import grpc
import pytest

from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.api.storage.v1 import artifact_pb2, storage_service_pb2_grpc
from mlmesh.api.storage.v1 import storage_service_pb2 as sapi
from mlmesh.api.trainer.v1 import run_pb2

pytestmark = pytest.mark.timeout(240)
R = run_pb2
# Long enough for several 1 s checkpoint intervals even on a fast machine (about 10 steps/s on a
# busy 2-core CPU).
STEPS = 200


def _async_spec(services, dataset, steps: int, *, every_n: int = 0) -> job_pb2.JobSpec:
    spec = services.finetune_spec("builtin:gpt2-tiny", dataset, method=job_pb2.TRAINING_METHOD_LORA)
    hp = spec.trainer.hyperparameters
    hp.max_steps, hp.max_seq_length, hp.global_batch_size, hp.seed = steps, 32, 8, 5
    # Constant LR: the schedule does not depend on max_steps, so a resumed run with more steps
    # must repeat the first run's losses exactly.
    hp.lr_scheduler, hp.warmup_steps = "constant", 0
    hp.lora.dropout = 0.1  # dropout draws random numbers: a resume must restore the RNG
    spec.trainer.overrides.micro_batch_size = 2  # 2 x 2 accumulation x 2 ranks = 8
    spec.checkpoint.async_save = True
    if every_n:
        spec.checkpoint.every_n_steps = every_n
    else:
        spec.checkpoint.every_interval.FromSeconds(1)
    spec.checkpoint.retention.keep_latest = 2
    return spec


def _checkpoints(services, job_id: str) -> list[artifact_pb2.Artifact]:
    with grpc.insecure_channel(services.storage_address) as ch:
        storage = storage_service_pb2_grpc.StorageServiceStub(ch)
        request = sapi.ListArtifactsRequest(
            team="team-a", kind=artifact_pb2.ARTIFACT_KIND_CHECKPOINT, job_id=job_id, page_size=1000
        )
        found = storage.ListArtifacts(request, metadata=services.md(services.alice), timeout=10).artifacts
    return sorted(found, key=lambda a: a.checkpoint.step)


def _reported_checkpoints(progress: list[dict]) -> list[int]:
    """The distinct checkpoint steps the worker reported as committed, in order."""
    return sorted({p["latest_checkpoint"]["step"] for p in progress if p.get("latest_checkpoint")})


def _losses(progress: list[dict]) -> dict[int, float]:
    return {p["step"]: p["loss"] for p in progress}


def _assert_complete(artifact: artifact_pb2.Artifact, job_id: str, run_id: str) -> None:
    assert artifact.state == artifact_pb2.ARTIFACT_STATE_COMMITTED
    assert artifact.checkpoint.job_id == job_id and artifact.checkpoint.run_id == run_id
    assert artifact.checkpoint.retention.keep_latest == 2
    files = {f.path for f in artifact.manifest.files}
    assert {"trainer_state.json", "rng/rank-0.pt", "rng/rank-1.pt"} <= files, sorted(files)


def test_async_interval_checkpoints_keep_the_latest_two(services, tmp_path):
    data = services.text_dataset(tmp_path / "text.jsonl")
    spec = _async_spec(services, data, STEPS)
    assert not spec.checkpoint.every_n_steps
    run = services.start_run("async-ck", spec)
    done = services.wait(run.run_id)
    assert done.state == R.RUN_STATE_SUCCEEDED, services.worker_logs(run.run_id)
    assert done.progress.latest_checkpoint_step > 0 and done.outputs.checkpoint_artifact_id
    progress = services.progress(run.run_id)
    assert sorted(_losses(progress)) == list(range(1, STEPS + 1))
    # The final checkpoint may land after the last step's report: the run's final progress has it.
    reported = sorted(set(_reported_checkpoints(progress)) | {done.progress.latest_checkpoint_step})
    # Taken by time (no step interval was set): several, so retention had some to delete.
    assert len(reported) >= 3, f"only {reported} checkpointed in {STEPS} steps: make the run longer"

    # Storage kept the latest two of the job's checkpoints and deleted the rest.
    kept = _checkpoints(services, "async-ck")
    assert len(kept) == 2, [(a.checkpoint.step, a.meta.id) for a in kept]
    assert kept[0].checkpoint.step < kept[1].checkpoint.step
    assert kept[1].meta.id == done.outputs.checkpoint_artifact_id
    assert kept[1].checkpoint.step == done.progress.latest_checkpoint_step == reported[-1]
    assert kept[0].checkpoint.step == reported[-2]
    for artifact in kept:
        _assert_complete(artifact, "async-ck", run.run_id)


def test_resume_from_an_async_checkpoint_is_exact(services, tmp_path):
    data = services.text_dataset(tmp_path / "text.jsonl")
    steps = 20
    run = services.start_run("async-resume", _async_spec(services, data, steps, every_n=5))
    done = services.wait(run.run_id)
    assert done.state == R.RUN_STATE_SUCCEEDED, services.worker_logs(run.run_id)
    first = _losses(services.progress(run.run_id))
    assert sorted(first) == list(range(1, steps + 1))
    kept = _checkpoints(services, "async-resume")
    assert [a.checkpoint.step for a in kept] == [15, 20]
    older = kept[0]  # committed in the background while steps 16-20 ran
    _assert_complete(older, "async-resume", run.run_id)

    # Attempt 2 resumes from it with more steps: it starts right after the checkpoint and, over
    # the steps both ran, repeats attempt 1's losses.
    more = _async_spec(services, data, steps + 5, every_n=5)
    resumed = services.start_run("async-resume", more, attempt=2, resume=older.meta.id)
    finished = services.wait(resumed.run_id)
    assert finished.state == R.RUN_STATE_SUCCEEDED, services.worker_logs(resumed.run_id)
    assert finished.resumed_from_checkpoint == older.meta.id
    progress = services.progress(resumed.run_id)
    assert progress[0]["step"] == 16
    again = _losses(progress)
    assert sorted(again) == list(range(16, steps + 6))
    for step in range(16, steps + 1):
        assert again[step] == pytest.approx(first[step], rel=1e-5, abs=1e-6), step
    # Its checkpoints (20 and 25) joined the job's: retention keeps the latest two, both attempt
    # 2's (of the two at step 20, the newer).
    kept = _checkpoints(services, "async-resume")
    assert [(a.checkpoint.step, a.checkpoint.run_id) for a in kept] == [(20, resumed.run_id), (25, resumed.run_id)]
