"""`make demo` (`python -m mlmesh.local.demo`): the whole platform on this machine, for real.

1. brings the mesh up (NATS, valkey, S3, Triton and the six services) in its own state dir;
2. submits `examples/lora-finetune.yaml` as team `demo`: preprocess → LoRA fine-tune of the
   packaged MiniLM → register → deploy (as a classifier and as an embedding model);
3. watches it live: each step's state, and the fine-tune's step, loss and ETA from its events;
4. queries the deployment through the gateway over KServe v2 (the held-out sentences: accuracy
   after the fine-tune) and the OpenAI-compatible `/v1/embeddings`, and repeats a query to show
   the cache hit;
5. prints a summary (time per stage, accuracy before and after, where the artifacts are) and takes
   the mesh down, also on failure or Ctrl-C.

Every stage is a function returning what it saw, so `tests/e2e/test_demo.py` asserts on each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from mlmesh.api.scheduler.v1 import (
    job_pb2,
    queue_pb2,
    scheduler_service_pb2_grpc,
    team_access_service_pb2,
    team_access_service_pb2_grpc,
)
from mlmesh.api.scheduler.v1 import scheduler_service_pb2 as sched
from mlmesh.cli import jobs as jobs_cli
from mlmesh.cli.jobs import TERMINAL
from mlmesh.cli.output import CliError
from mlmesh.common import contracts, nats_permissions
from mlmesh.common.auth import mint_token
from mlmesh.common.nats_auth import write_secret
from mlmesh.local import mesh
from mlmesh.local.errors import InfraError
from mlmesh.sdk.client import Client, RpcFailure
from mlmesh.sdk.jobspec import load_job_spec

TEAM = "demo"
REPO = Path(__file__).resolve().parents[5]  # an editable install: the checkout
PIPELINE = REPO / "examples" / "lora-finetune.yaml"
STATE_DIR = REPO / ".mlmesh-demo"
S = job_pb2.JobState
Say = Callable[[str], None]


def state_name(state: int) -> str:
    """`succeeded`: the CLI's short state name, as the demo prints it."""
    return jobs_cli.state_name(state).lower()


class DemoError(Exception):
    """A stage that did not do what it should; the message says which and why."""


# --- events as a plain NATS subscriber sees them -------------------------------------------------


@dataclass
class Recorded:
    subject: str
    headers: dict[str, str]
    data: dict
    received: float


class EventRecorder:
    """Subscribes to `mlmesh.jobs.<team>.>` on its own thread and loop, keeping every message."""

    def __init__(self, nats_url: str, team: str, creds_file: str):
        self.nats_url, self.team, self.creds_file = nats_url, team, creds_file
        self.events: list[Recorded] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="demo-events", daemon=True)

    def start(self) -> EventRecorder:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._subscribe(), self._loop).result(timeout=15)
        return self

    async def _subscribe(self) -> None:
        import nats

        self._nc = await nats.connect(
            self.nats_url,
            name="mlmesh-demo",
            user_credentials=self.creds_file,
            inbox_prefix=contracts.inbox_prefix(nats_permissions.team_identity(self.team)),
        )

        async def on_msg(msg) -> None:
            try:
                data = json.loads(msg.data or b"{}")
            except ValueError:
                data = {}
            with self._lock:
                self.events.append(Recorded(msg.subject, dict(msg.headers or {}), data, time.time()))

        await self._nc.subscribe(contracts.team_jobs(self.team), cb=on_msg)
        await self._nc.flush()

    def snapshot(self) -> list[Recorded]:
        with self._lock:
            return list(self.events)

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._nc.close(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


# --- stages --------------------------------------------------------------------------------------


@dataclass
class Demo:
    root: Path
    say: Say = print
    endpoints: dict = field(default_factory=dict)
    token: str = ""
    admin: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    def up(self) -> dict:
        t0 = time.monotonic()
        self.say(f"== bringing the mesh up in {self.root}")
        self.endpoints = mesh.up(self.root, on_progress=lambda m: self.say(f"   {m}"))
        self.timings["mesh up"] = time.monotonic() - t0
        auth = self.endpoints["auth"]
        self.admin = Path(auth["admin_token"]).read_text().strip()
        signing = Path(auth["signing_key"]).read_bytes()
        self.token = mint_token(signing, subject="demo-user", team=TEAM, roles=["developer"], ttl_s=3 * 3600)
        return self.endpoints

    def event_credentials(self) -> str:
        """The team's own event credentials, as a product team gets them (TeamAccessService)."""
        ep = self.endpoints["services"]["scheduler"]["grpc"]
        stub = team_access_service_pb2_grpc.TeamAccessServiceStub
        with Client("scheduler", stub, endpoint=ep, token=self.token) as client:
            reply = client.call(
                client.stub.IssueEventCredentials, team_access_service_pb2.IssueEventCredentialsRequest()
            )
        path = self.root / f"{TEAM}.creds"
        write_secret(path, reply.credentials)
        return str(path)

    def scheduler(self, token: str) -> Client:
        ep = self.endpoints["services"]["scheduler"]["grpc"]
        return Client("scheduler", scheduler_service_pb2_grpc.SchedulerServiceStub, endpoint=ep, token=token)

    def create_queue(self) -> queue_pb2.Queue:
        spec = queue_pb2.QueueSpec(team=TEAM, team_default=True)
        spec.nominal_quota.cpu_millis = 10**12  # the demo's only limit is this machine
        spec.nominal_quota.memory_bytes = 1 << 60
        client = self.scheduler(self.admin)
        try:
            return client.call(client.stub.CreateQueue, sched.CreateQueueRequest(name="demo", spec=spec)).queue
        except RpcFailure as exc:  # a re-run on the same state dir: the queue is still there
            if exc.code != grpc.StatusCode.ALREADY_EXISTS:
                raise
            return client.call(client.stub.GetQueue, sched.GetQueueRequest(name="demo")).queue

    def submit(self, path: Path = PIPELINE) -> job_pb2.Job:
        spec = load_job_spec(path)
        client = self.scheduler(self.token)
        job = client.call(client.stub.SubmitJob, sched.SubmitJobRequest(spec=spec, request_id=uuid.uuid4().hex)).job
        self.say(f"== submitted pipeline {job.meta.id} ({len(spec.pipeline.steps)} steps) as team {TEAM}")
        return job

    def get(self, client: Client, job_id: str) -> job_pb2.Job:
        return client.call(client.stub.GetJob, sched.GetJobRequest(job_id=job_id)).job

    def watch(self, job_id: str, recorder: EventRecorder, timeout_s: float = 900) -> dict[str, job_pb2.Job]:
        """Until the pipeline ends: step transitions, and the fine-tune's progress events."""
        client = self.scheduler(self.token)
        deadline = time.monotonic() + timeout_s
        seen: dict[str, int] = {}
        shown = 0
        steps: dict[str, job_pb2.Job] = {}
        while True:
            parent = self.get(client, job_id)
            for st in parent.status.steps:
                if seen.get(st.name) != st.state:
                    seen[st.name] = st.state
                    child = steps[st.name] = self.get(client, st.job_id)
                    msg = child.status.message  # the child itself: the parent's step list may lag
                    self.say(f"   [{st.name}] {state_name(child.status.state)}" + (f": {msg}" if msg else ""))
            events = recorder.snapshot()
            for e in events[shown:]:
                if e.subject.endswith(".progress"):
                    self.say("   " + progress_line(e.data))
            shown = len(events)
            if parent.status.state in TERMINAL:
                for st in parent.status.steps:
                    steps[st.name] = self.get(client, st.job_id)
                steps["pipeline"] = parent
                return steps
            if time.monotonic() > deadline:
                raise DemoError(f"pipeline {job_id} still {state_name(parent.status.state)} after {timeout_s:.0f}s")
            time.sleep(1.0)

    # --- the gateway -------------------------------------------------------------------------------

    def _http(self, path: str, body: dict, timeout: float = 60) -> tuple[dict, float]:
        url = self.endpoints["services"]["inference-gateway"]["http_url"] + path
        request = urllib.request.Request(
            url,
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json", "authorization": f"Bearer {self.token}"},
        )
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                out = json.loads(reply.read())
        except urllib.error.HTTPError as err:
            raise DemoError(f"POST {path}: HTTP {err.code}: {err.read().decode()[:300]}") from None
        return out, time.perf_counter() - t0

    def classify(self, texts: list[str]) -> tuple[list[str], float]:
        body = {"inputs": [{"name": "TEXT", "shape": [len(texts), 1], "datatype": "BYTES", "data": texts}]}
        out, seconds = self._http("/v2/models/topics/infer", body)
        labels = next(o["data"] for o in out["outputs"] if o["name"] == "LABEL")
        return [str(label) for label in labels], seconds

    def kserve_accuracy(self, rows: list[dict]) -> dict:
        """The held-out rows through the gateway, one KServe v2 request each (as clients send)."""
        t0 = time.monotonic()
        correct = 0
        for row in rows:
            (label,), _ = self.classify([row["text"]])
            correct += label == row["label"]
        result = {"n": len(rows), "accuracy": correct / max(1, len(rows)), "seconds": time.monotonic() - t0}
        self.say(f"   KServe v2: {correct}/{len(rows)} held-out sentences right ({result['accuracy']:.0%})")
        return result

    def embeddings(self, texts: list[str]) -> dict:
        out, _ = self._http("/v1/embeddings", {"model": "topics-embed", "input": texts})
        vectors = [d["embedding"] for d in out["data"]]
        sims = [[cosine(a, b) for b in vectors] for a in vectors]
        self.say(
            f"   OpenAI /v1/embeddings: {len(vectors)} vectors of {len(vectors[0])} floats; cosine similarity "
            f"{sims[0][1]:.2f} between the first two sentences, {sims[0][2]:.2f} between the first and the last"
        )
        return {"vectors": vectors, "similarity": sims, "usage": out.get("usage", {})}

    def cache_hit(self, text: str) -> dict:
        """The same request twice: the second is answered from valkey (the gateway's counter says so)."""
        before = cache_counts(self.endpoints)
        _, first = self.classify([text + " (cache probe)"])
        _, second = self.classify([text + " (cache probe)"])
        after = cache_counts(self.endpoints)
        hits = after.get("hit", 0) - before.get("hit", 0)
        self.say(f"   cache: first {first * 1e3:.1f} ms, repeated {second * 1e3:.1f} ms ({hits:.0f} hit)")
        return {
            "first_s": first,
            "second_s": second,
            "hits": hits,
            "misses": after.get("miss", 0) - before.get("miss", 0),
        }

    def down(self) -> None:
        self.say("== taking the mesh down")
        mesh.down(self.root, on_progress=lambda m: self.say(f"   {m}"))


def progress_line(data: dict) -> str:
    p = data.get("progress", {})
    step, total = int(p.get("step", 0)), int(p.get("totalSteps", 0))
    eta = p.get("eta", "")
    eta_s = float(eta.rstrip("s")) if isinstance(eta, str) and eta.endswith("s") else 0.0
    loss = p.get("loss")
    loss_text = f"loss {loss:.4f}" if isinstance(loss, (int, float)) else "loss -"
    return f"[finetune] step {step}/{total} {loss_text} ETA {eta_s:.0f}s"


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)) or 1.0)


def cache_counts(endpoints: dict) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    url = endpoints["services"]["inference-gateway"]["metrics_url"]
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "mlmesh_gateway_cache_requests":
            for s in family.samples:
                if s.name.endswith("_total"):
                    out[s.labels["result"]] = out.get(s.labels["result"], 0.0) + s.value
    return out


def held_out(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("split") == "eval"]


def stage_seconds(job: job_pb2.Job) -> float:
    """RUNNING (or ADMITTED) to the end, from the job's own transition history."""
    start = end = None
    for t in job.status.history:
        if t.to_state in (S.JOB_STATE_ADMITTED, S.JOB_STATE_RUNNING) and start is None:
            start = t.transition_time.ToNanoseconds() / 1e9
        if t.to_state in TERMINAL:
            end = t.transition_time.ToNanoseconds() / 1e9
    return (end - start) if start is not None and end is not None else 0.0


def summary(demo: Demo, steps: dict[str, job_pb2.Job], results: dict) -> str:
    ft, reg = steps["finetune"].status.outputs, steps["register"].status.outputs
    lines = ["", "== summary", "time per stage:"]
    lines.append(f"   {'mesh up':<18}{demo.timings.get('mesh up', 0):7.1f} s")
    for name in ("preprocess", "finetune", "register", "deploy", "deploy-embeddings"):
        if name in steps:
            lines.append(f"   {name:<18}{stage_seconds(steps[name]):7.1f} s")
    lines.append(f"   {'queries':<18}{demo.timings.get('queries', 0):7.1f} s")
    before = ft.metrics.get("eval_accuracy_before", float("nan"))
    after = ft.metrics.get("eval_accuracy", float("nan"))
    lines += [
        "accuracy on the held-out sentences:",
        f"   before the fine-tune (trainer's eval)  {before:.1%}",
        f"   after the fine-tune  (trainer's eval)  {after:.1%}",
        f"   after, through the gateway (KServe v2) {results['kserve']['accuracy']:.1%}",
        "artifacts:",
        f"   prepared dataset   {REPO / 'examples/data/build/topics.prepared.jsonl'}",
        f"   model (adapter)    artifact {ft.model_artifact_id} (storage, team {TEAM})",
        f"   last checkpoint    artifact {ft.checkpoint_artifact_id}",
        f"   registry           {reg.model_name} version {reg.model_version} (alias prod)",
        "   deployments        topics (KServe v2), topics-embed (OpenAI embeddings)",
        f"   logs               {demo.root / 'logs'}; workers under {demo.root / 'trainer'}",
    ]
    return "\n".join(lines)


def run(root: Path = STATE_DIR, say: Say = print, keep: bool = False) -> dict:
    demo = Demo(root, say)
    results: dict = {}
    recorder = None
    started = time.monotonic()
    try:
        demo.up()
        recorder = EventRecorder(demo.endpoints["infra"]["nats"]["url"], TEAM, demo.event_credentials()).start()
        demo.create_queue()
        job = demo.submit()
        steps = demo.watch(job.meta.id, recorder)
        results["steps"] = steps
        failed = {n: j.status.message for n, j in steps.items() if j.status.state != S.JOB_STATE_SUCCEEDED}
        if failed:
            raise DemoError(f"pipeline did not succeed: {failed}")
        t0 = time.monotonic()
        say("== querying the deployed model through the gateway")
        rows = held_out(REPO / "examples/data/build/topics.prepared.jsonl")
        results["kserve"] = demo.kserve_accuracy(rows)
        results["embeddings"] = demo.embeddings(
            ["The striker scored twice.", "The goalkeeper saved a penalty.", "Heavy rain is expected."]
        )
        results["cache"] = demo.cache_hit(rows[0]["text"])
        demo.timings["queries"] = time.monotonic() - t0
        results["events"] = recorder.snapshot()
        say(summary(demo, steps, results))
        say(f"\ndemo finished in {time.monotonic() - started:.0f} s")
        return results
    finally:
        if recorder is not None:
            recorder.stop()
        if not keep:
            demo.down()


def main() -> int:
    ap = argparse.ArgumentParser(description="the mlmesh demo: a LoRA fine-tune from submit to served, for real")
    ap.add_argument("--state-dir", type=Path, default=STATE_DIR)
    ap.add_argument("--keep", action="store_true", help="leave the mesh running (stop it with `mlmesh down`)")
    args = ap.parse_args()
    try:
        run(args.state_dir, keep=args.keep)
    except (DemoError, CliError, InfraError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        print(f"logs: {args.state_dir / 'logs'}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the mesh was taken down", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
