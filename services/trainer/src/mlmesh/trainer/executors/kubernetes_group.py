"""The Kubernetes executor as the run controller sees it: a launch renders and applies the run's
objects; pods report through the same NATS heartbeats and results as any worker, which is how
the controller learns of success (rank 0's result) and of death (silence)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from mlmesh.api.trainer.v1 import run_pb2
from mlmesh.trainer.executors.base import LaunchSpec, WorkerExit
from mlmesh.trainer.executors.kubernetes import KubernetesExecutor, KubernetesTarget
from mlmesh.trainer.settings import TrainerSettings

DEFAULT_CPU_MILLIS = 2000
DEFAULT_MEMORY_BYTES = 8 << 30


class KubernetesGroup:
    # Pods' exits are not watched: the controller takes rank 0's result report as the success.
    reports_exits = False

    def __init__(self, executor: KubernetesExecutor, spec: LaunchSpec):
        self.executor = executor
        self.spec = spec
        self._stopped = False

    async def next_exit(self) -> WorkerExit:
        await asyncio.Event().wait()  # pods' exits are not watched; heartbeats and results are
        raise AssertionError("unreachable")

    def alive(self) -> set[int]:
        return set() if self._stopped else {r.rank for r in self.spec.ranks}

    def statuses(self) -> list[run_pb2.WorkerStatus]:
        alive = not self._stopped
        return [run_pb2.WorkerStatus(rank=r.rank, node_id="kubernetes", alive=alive) for r in self.spec.ranks]

    async def terminate(self, grace_s: float) -> None:
        self._stopped = True
        await self.executor.stop(self.spec.run_id, grace_s)


class KubernetesRunExecutor:
    kind = run_pb2.EXECUTOR_KIND_KUBERNETES

    def __init__(self, settings: TrainerSettings):
        self.executor = KubernetesExecutor(
            KubernetesTarget(
                namespace=settings.kubernetes_namespace, image=settings.kubernetes_image, kubeconfig=settings.kubeconfig
            )
        )

    async def launch(self, spec: LaunchSpec) -> KubernetesGroup:
        config_path = Path(spec.argv[-1])
        config = json.loads(await asyncio.to_thread(config_path.read_text))
        # Inside the pod the config is the mounted ConfigMap, and outputs go to the pod's work dir.
        config["output_dir"] = "/var/lib/mlmesh/work/output"
        config["progress_file"] = ""
        await self.executor.launch(
            run_id=spec.run_id,
            job_id=spec.job_id,
            team=config.get("team", ""),
            world_size=spec.world_size,
            gpus_per_worker=max((len(r.device_ids) for r in spec.ranks), default=0),
            cpu_millis=DEFAULT_CPU_MILLIS,
            memory_bytes=DEFAULT_MEMORY_BYTES,
            worker_config_json=json.dumps(config),
            env=spec.env,
            out_dir=spec.log_dir,
            master_port=spec.master_port,
            secret_env=spec.secret_env,
        )
        return KubernetesGroup(self.executor, spec)
