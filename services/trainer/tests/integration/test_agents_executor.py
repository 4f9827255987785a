"""The agents executor: the trainer (MLMESH_TRAINER_EXECUTOR=agents) starts its ranks through a real
fabric node agent process (`python -m mlmesh.fabric agent`) registered with a real fabric service,
all on one nats-server; exits come back as the agent's WorkerExited events."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import grpc
import pytest

from mlmesh.api.fabric.v1 import fabric_service_pb2, fabric_service_pb2_grpc, node_agent_service_pb2_grpc, node_pb2
from mlmesh.api.fabric.v1 import node_agent_service_pb2 as agent_api
from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.api.trainer.v1 import run_pb2
from mlmesh.api.trainer.v1 import trainer_service_pb2 as api
from mlmesh.common.auth import mint_service_token, write_secret

pytestmark = pytest.mark.timeout(420)
R = run_pb2


class AgentCluster:
    def __init__(self, services, tmp: Path):
        self.svc = services
        self.log_dir = tmp / "agent-workers"
        write_secret(tmp / "fabric.token", mint_service_token(services.private_key, "fabric"))
        common = {"SERVICE_TOKEN_FILE": str(tmp / "fabric.token")}
        fabric = services._start("fabric", {**common, "HEARTBEAT_INTERVAL_S": "1"})
        services._start(
            "agent",
            {**common, "FABRIC_ADDRESS": fabric, "NODE_ID": "node-a", "LOG_DIR": str(self.log_dir)},
            module="fabric",
            args=("agent",),
        )
        with grpc.insecure_channel(fabric) as channel:
            stub = fabric_service_pb2_grpc.FabricServiceStub(channel)
            deadline = time.monotonic() + 30
            while True:  # the agent registers once its own server is up
                nodes = stub.ListNodes(fabric_service_pb2.ListNodesRequest(), metadata=services.md(), timeout=5).nodes
                ready = [n for n in nodes if n.state == node_pb2.NODE_STATE_READY]
                if ready:
                    break
                assert time.monotonic() < deadline, f"no node registered: {nodes}"
                time.sleep(0.2)
        [self.node] = ready
        self.agent = grpc.insecure_channel(self.node.agent_address)

    def spec(self, dataset: Path, steps: int, every: int = 0) -> job_pb2.JobSpec:
        spec = self.svc.finetune_spec("builtin:gpt2-tiny", dataset, method=job_pb2.TRAINING_METHOD_LORA)
        hp = spec.trainer.hyperparameters
        hp.max_steps, hp.max_seq_length, hp.global_batch_size = steps, 32, 4
        spec.checkpoint.every_n_steps = every
        return spec

    def start(self, job_id: str, spec: job_pb2.JobSpec) -> run_pb2.Run:
        """StartRun as the scheduler would call it: 2 ranks placed on the agent's node."""
        req = api.StartRunRequest(job_id=job_id, team="team-a", attempt=1, spec=spec)
        node = req.placement.nodes.add(node_id=self.node.id, agent_address=self.node.agent_address)
        for rank in (0, 1):
            node.workers.add(rank=rank, local_rank=rank)
        req.placement.world_size = 2
        return self.svc.stub.StartRun(req, metadata=self.svc.md(), timeout=30).run

    def logs(self, run_id: str) -> str:
        files = sorted((self.log_dir / run_id).glob("*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in files)

    def wait(self, run_id: str, until=None, timeout: float = 240) -> run_pb2.Run:
        try:
            return self.svc.wait(run_id, until, timeout) if until else self.svc.wait(run_id, timeout=timeout)
        except AssertionError as err:
            raise AssertionError(f"{err}\n{self.logs(run_id)}") from None

    def agent_workers(self, run_id: str) -> list[agent_api.Worker]:
        stub = node_agent_service_pb2_grpc.NodeAgentServiceStub(self.agent)
        request = agent_api.GetWorkersRequest(run_id=run_id, include_exited=True)
        return list(stub.GetWorkers(request, metadata=self.svc.md(), timeout=10).workers)


@pytest.fixture
def cluster(make_services, tmp_path: Path):
    # No Python at WORKER_PYTHON: the ranks run only because the agent uses its own interpreter.
    services = make_services(trainer_env={"EXECUTOR": "agents", "WORKER_PYTHON": "/nonexistent/bin/python3"})
    c = AgentCluster(services, tmp_path)
    try:
        yield c
    finally:
        c.agent.close()


def test_lora_run_on_two_ranks_started_by_the_node_agent(cluster: AgentCluster, tmp_path: Path):
    data = cluster.svc.text_dataset(tmp_path / "text.jsonl", rows=100)
    run = cluster.start("agents-ft", cluster.spec(data, steps=4))
    assert run.executor == R.EXECUTOR_KIND_AGENTS
    done = cluster.wait(run.run_id)
    assert done.state == R.RUN_STATE_SUCCEEDED, (done.reason, done.message, cluster.logs(run.run_id))
    assert done.restarts == 0 and done.outputs.model_artifact_id
    assert [p["step"] for p in cluster.svc.progress(run.run_id)] == [1, 2, 3, 4]
    # The ranks were the agent's processes: its record, its log directory, exit code 0.
    assert sorted((w.rank, w.node_id, w.exit_code) for w in done.workers) == [(0, "node-a", 0), (1, "node-a", 0)]
    assert all(
        w.pid > 0 and not w.alive and Path(w.log_path).parent == cluster.log_dir / run.run_id for w in done.workers
    )
    on_agent = cluster.agent_workers(run.run_id)
    assert sorted((w.rank, w.local_rank, w.exit_code) for w in on_agent) == [(0, 0, 0), (1, 1, 0)]
    assert {w.pid for w in on_agent} == {w.pid for w in done.workers}


def test_killed_rank_restarts_the_gang_through_the_agent(cluster: AgentCluster, tmp_path: Path):
    data = cluster.svc.text_dataset(tmp_path / "text.jsonl", rows=100)
    run = cluster.start("agents-kill", cluster.spec(data, steps=24, every=4))
    first = cluster.wait(run.run_id, until=lambda r: r.progress.step >= 1)
    if first.progress.step >= 23:
        pytest.skip("the run finished before the kill")
    victim = next(w for w in first.workers if w.rank == 1)
    assert victim.pid > 0 and victim.alive
    killed_at = time.monotonic()
    os.kill(victim.pid, signal.SIGKILL)
    restarting = cluster.wait(run.run_id, until=lambda r: r.restarts >= 1, timeout=60)
    detected_s = time.monotonic() - killed_at
    assert detected_s < 10, f"the dead rank was noticed after {detected_s:.1f}s"
    assert restarting.failure_class == job_pb2.FAILURE_CLASS_SIGNAL, restarting
    done = cluster.wait(run.run_id)
    assert done.state == R.RUN_STATE_SUCCEEDED, (done.reason, done.message, cluster.logs(run.run_id))
    assert done.restarts == 1 and done.failure_class == job_pb2.FAILURE_CLASS_SIGNAL
    assert victim.pid not in {w.pid for w in done.workers}
    # The agent ran each rank twice: the first launch (rank 1 killed) and the restart.
    by_attempt = {(w.attempt, w.rank): w for w in cluster.agent_workers(run.run_id)}
    assert by_attempt[(0, 1)].signal == signal.SIGKILL and by_attempt[(0, 1)].pid == victim.pid
    assert by_attempt[(1, 0)].exit_code == 0 and by_attempt[(1, 1)].exit_code == 0
    assert max(p["step"] for p in cluster.svc.progress(run.run_id)) == 24


def test_stop_through_the_agent_records_how_each_rank_ended(cluster: AgentCluster, tmp_path: Path):
    data = cluster.svc.text_dataset(tmp_path / "text.jsonl", rows=100)
    run = cluster.start("agents-stop", cluster.spec(data, steps=500))
    cluster.wait(run.run_id, until=lambda r: r.progress.step >= 2)
    request = api.StopRunRequest(run_id=run.run_id, checkpoint=True, reason="Preempted")
    cluster.svc.stub.StopRun(request, metadata=cluster.svc.md(), timeout=90)
    stopped = cluster.wait(run.run_id)
    assert stopped.state == R.RUN_STATE_STOPPED and stopped.reason == "Preempted", stopped
    assert stopped.progress.latest_checkpoint_step >= 2 and stopped.outputs.checkpoint_artifact_id
    # The agent's StopWorkers reply is the ranks' end: none left "alive" in the run's record.
    assert len(stopped.workers) == 2
    assert all(not w.alive and (w.HasField("exit_code") or w.HasField("signal")) for w in stopped.workers), stopped
    assert not [w for w in cluster.agent_workers(run.run_id) if w.state != agent_api.WORKER_STATE_EXITED]

    # Without a placement there is no agent to start the ranks on: the run fails, naming it.
    bare = api.StartRunRequest(job_id="agents-bare", team="team-a", attempt=1, spec=cluster.spec(data, steps=2))
    failed = cluster.wait(cluster.svc.stub.StartRun(bare, metadata=cluster.svc.md(), timeout=30).run.run_id)
    assert failed.state == R.RUN_STATE_FAILED and failed.failure_class == job_pb2.FAILURE_CLASS_USER_ERROR
    assert "placement" in failed.message and "node agent" in failed.message, failed.message
