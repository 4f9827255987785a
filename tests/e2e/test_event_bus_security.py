"""The event bus as an outsider tries it, on the live mesh (real nats-server in operator mode, the
six services with their own NATS identities):

- no credentials (or credentials from a foreign operator) means no connection;
- team B's credentials, issued by TeamAccessService, cannot read team A's events or any KV bucket,
  cannot publish into `mlmesh.`, cannot create a consumer on team A's subjects, cannot delete or
  purge a stream; team A's replay their own history;
- each service identity is refused a subject it does not own, and the gateway the jobs bucket;
- a running job does not move on a forged RunStateChanged(SUCCEEDED) from any identity but the
  trainer's.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import nats
import pytest
from google.protobuf import json_format
from nats.js.api import ConsumerConfig, DeliverPolicy

from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.scheduler.v1 import job_pb2, queue_pb2
from mlmesh.api.scheduler.v1 import scheduler_service_pb2 as sched_api
from mlmesh.api.scheduler.v1 import scheduler_service_pb2_grpc as sched_grpc
from mlmesh.api.scheduler.v1 import team_access_service_pb2 as access_api
from mlmesh.api.scheduler.v1 import team_access_service_pb2_grpc as access_grpc
from mlmesh.api.trainer.v1 import run_pb2
from mlmesh.common import contracts, nats_permissions
from mlmesh.common.events import build_headers
from mlmesh.common.nats_auth import NatsTrust, write_secret
from tests.e2e.conftest import bearer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

TEAM_A, TEAM_B = "bus-a", "bus-b"
REFUSED = 2.0  # seconds: a request the server refuses gets no reply; this is how long we wait for one


class Bus:
    """The live mesh's bus: its URL, the identities' credentials, and tokens."""

    def __init__(self, live_mesh, tmp: Path):
        self.mesh = live_mesh
        self.url = live_mesh.endpoints["infra"]["nats"]["url"]
        self.creds_dir = live_mesh.root / "nats-auth" / "creds"
        self.tmp = tmp
        self.channel = grpc.insecure_channel(live_mesh.target("scheduler"))
        self.scheduler = sched_grpc.SchedulerServiceStub(self.channel)
        self.access = access_grpc.TeamAccessServiceStub(self.channel)

    def team_creds(self, team: str) -> Path:
        reply = self.access.IssueEventCredentials(
            access_api.IssueEventCredentialsRequest(), metadata=bearer(self.mesh.token(team)), timeout=10
        )
        path = self.tmp / f"{team}-{uuid.uuid4().hex[:6]}.creds"
        write_secret(path, reply.credentials)
        return path

    async def connect(self, creds: Path, identity: str, errors: list[str] | None = None):
        async def on_error(exc: Exception) -> None:
            if errors is not None:
                errors.append(str(exc))

        return await nats.connect(
            self.url,
            user_credentials=str(creds),
            inbox_prefix=contracts.inbox_prefix(identity),
            allow_reconnect=False,
            error_cb=on_error,
        )

    async def as_team(self, team: str, errors: list[str] | None = None):
        return await self.connect(self.team_creds(team), nats_permissions.team_identity(team), errors)

    async def as_service(self, identity: str, errors: list[str] | None = None):
        return await self.connect(self.creds_dir / f"{identity}.creds", identity, errors)

    async def as_admin(self):
        return await self.connect(self.creds_dir / "admin.creds", nats_permissions.ADMIN)


@pytest.fixture(scope="module")
def bus(live_mesh, tmp_path_factory):
    b = Bus(live_mesh, tmp_path_factory.mktemp("bus"))
    admin = bearer(live_mesh.admin_token)
    for team in (TEAM_A, TEAM_B):
        spec = queue_pb2.QueueSpec(team=team, team_default=True)
        spec.nominal_quota.cpu_millis = 2000
        spec.nominal_quota.memory_bytes = 4 << 30
        b.scheduler.CreateQueue(sched_api.CreateQueueRequest(name=team, spec=spec), metadata=admin, timeout=10)
    try:
        yield b
    finally:
        b.channel.close()


@pytest.fixture(scope="module")
def running_job(bus):
    """Team A's job, RUNNING for a while (a worker that sleeps), cancelled at the end."""
    spec = job_pb2.JobSpec(name="bus-sleeper", kind=job_pb2.JOB_KIND_COMMAND, queue=TEAM_A)
    spec.workers.count = 1
    spec.workers.resources.cpu_millis = 100
    spec.workers.resources.memory_bytes = 64 << 20
    spec.command.command.extend(["python", "-c", "import time; time.sleep(120)"])
    md = bearer(bus.mesh.token(TEAM_A))
    job = bus.scheduler.SubmitJob(sched_api.SubmitJobRequest(spec=spec), metadata=md, timeout=10).job
    _wait_state(bus, job.meta.id, "JOB_STATE_RUNNING", md)
    try:
        yield job.meta.id
    finally:
        bus.scheduler.CancelJob(sched_api.CancelJobRequest(job_id=job.meta.id), metadata=md, timeout=10)


def _wait_state(bus: Bus, job_id: str, state: str, md, timeout: float = 90) -> job_pb2.Job:
    deadline = time.monotonic() + timeout
    while True:
        job = bus.scheduler.GetJob(sched_api.GetJobRequest(job_id=job_id), metadata=md, timeout=10).job
        if job_pb2.JobState.Name(job.status.state) == state:
            return job
        assert time.monotonic() < deadline, f"{job_id} is {job_pb2.JobState.Name(job.status.state)}, not {state}"
        time.sleep(0.3)


async def test_no_credentials_or_a_foreign_operators_means_no_connection(bus, tmp_path):
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await nats.connect(bus.url, allow_reconnect=False, connect_timeout=5)
    foreign = NatsTrust.generate()  # a well-formed user of an operator the server does not trust
    creds = foreign.issue("intruder", nats_permissions.admin_permissions()).write(tmp_path / "foreign.creds")
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await nats.connect(bus.url, user_credentials=str(creds), allow_reconnect=False, connect_timeout=5)


def test_credentials_for_another_team_are_not_found(bus):
    with pytest.raises(grpc.RpcError) as err:
        bus.access.IssueEventCredentials(
            access_api.IssueEventCredentialsRequest(team=TEAM_A), metadata=bearer(bus.mesh.token(TEAM_B)), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_team_replays_its_own_events_and_cannot_touch_anything_else(bus, running_job):
    # Team A: its job's history from the first event.
    a = await bus.as_team(TEAM_A)
    seen: list[str] = []

    async def on_a(msg) -> None:
        seen.append(msg.subject)

    await a.jetstream().subscribe(
        contracts.team_jobs(TEAM_A),
        stream=contracts.JOBS_STREAM.name,
        cb=on_a,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
        config=ConsumerConfig(name=f"a-{uuid.uuid4().hex[:8]}"),
    )
    state = contracts.job_subject(TEAM_A, running_job, contracts.JOB_STATE)
    await _until(lambda: state in seen, "team A's replay of its job")

    errors: list[str] = []
    b = await bus.as_team(TEAM_B, errors)
    js = b.jetstream(timeout=REFUSED)
    # Team A's events: neither a consumer on its subjects nor a plain subscription delivers them.
    with pytest.raises(Exception):  # noqa: B017 - the server refuses: no reply, a timeout
        await js.subscribe(
            contracts.team_jobs(TEAM_A),
            stream=contracts.JOBS_STREAM.name,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
            config=ConsumerConfig(name=f"b-{uuid.uuid4().hex[:8]}"),
        )
    leaked: list[str] = []

    async def on_b(msg) -> None:
        leaked.append(msg.subject)

    await b.subscribe(contracts.team_jobs(TEAM_A), cb=on_b)
    await b.subscribe(">", cb=on_b)
    admin = await bus.as_admin()
    await admin.publish(state, b"{}")  # core publish, not stored: only a live subscriber could see it
    await admin.flush()
    await asyncio.sleep(1.0)
    assert leaked == []
    assert any("permissions violation for subscription" in e.lower() for e in errors), errors
    # No KV: not the jobs bucket, not by direct get.
    with pytest.raises(Exception):  # noqa: B017
        await js.key_value(contracts.JOBS)
    with pytest.raises(Exception):  # noqa: B017
        await js.get_msg(contracts.kv_stream(contracts.JOBS), last_by_subj=f"$KV.{contracts.JOBS}.{running_job}")
    # No publish into mlmesh.: a forged run event is not stored.
    forged = contracts.job_subject(TEAM_B, "forged-job", contracts.JOB_RUN)
    with pytest.raises(Exception):  # noqa: B017
        await js.publish(forged, b"{}")
    # No stream administration.
    for attempt in (js.delete_stream, js.purge_stream):
        with pytest.raises(Exception):  # noqa: B017
            await attempt(contracts.JOBS_STREAM.name)
    ajs = admin.jetstream()
    assert (await ajs.stream_info(contracts.JOBS_STREAM.name)).state.messages > 0
    with pytest.raises(Exception):  # noqa: B017 - nothing was stored on the forged subject
        await ajs.get_last_msg(contracts.JOBS_STREAM.name, forged)
    for nc in (a, b, admin):
        await nc.close()


async def test_each_service_identity_is_refused_what_it_does_not_own(bus):
    not_owned = {
        contracts.SCHEDULER: contracts.alert_subject("critical", "forged"),
        contracts.FABRIC: contracts.job_subject("t", "j", contracts.JOB_STATE),
        contracts.AGENT: contracts.node_subject("n", contracts.NODE_STATE),
        contracts.STORAGE: contracts.deployment_subject("t", "d"),
        contracts.TRAINER: contracts.job_subject("t", "j", contracts.JOB_STATE),
        contracts.WORKER: contracts.job_subject("t", "j", contracts.JOB_PROGRESS),
        contracts.GATEWAY: contracts.model_subject("m", "1", contracts.MODEL_ALIASED),
        contracts.TELEMETRY: contracts.node_subject("n", contracts.NODE_HEARTBEAT),
    }
    for identity, subject in not_owned.items():
        errors: list[str] = []
        nc = await bus.as_service(identity, errors)
        await nc.publish(subject, b"{}")
        await nc.flush()
        await _until(lambda errors=errors: errors, f"{identity}'s refusal")
        assert f'permissions violation for publish to "{subject}"' in errors[0].lower(), (identity, errors)
        await nc.close()


async def test_the_gateway_cannot_write_the_jobs_bucket(bus, running_job):
    admin = await bus.as_admin()
    jobs = await admin.jetstream().key_value(contracts.JOBS)
    before = await jobs.get(running_job)
    gateway = await bus.as_service(contracts.GATEWAY)
    with pytest.raises(Exception):  # noqa: B017 - refused: no reply
        await gateway.jetstream(timeout=REFUSED).publish(f"$KV.{contracts.JOBS}.{running_job}", b"forged")
    assert (await jobs.get(running_job)).revision == before.revision
    await gateway.close()
    await admin.close()


async def test_a_running_job_does_not_move_on_a_forged_run_event(bus, running_job):
    """RunStateChanged(SUCCEEDED) from every identity but the trainer's, and from both teams."""
    md = bearer(bus.mesh.token(TEAM_A))
    job = _wait_state(bus, running_job, "JOB_STATE_RUNNING", md)
    event = events_pb2.RunStateChanged(
        job_id=running_job,
        team=TEAM_A,
        attempt=job.status.attempt,
        from_state=run_pb2.RUN_STATE_RUNNING,
        to_state=run_pb2.RUN_STATE_SUCCEEDED,
        reason="Forged",
    )
    payload = json_format.MessageToJson(event).encode()
    subject = contracts.job_subject(TEAM_A, running_job, contracts.JOB_RUN)
    forgers = [i for i in contracts.SERVICE_IDENTITIES if i != contracts.TRAINER]
    for identity in [*forgers, TEAM_A, TEAM_B]:
        is_team = identity in (TEAM_A, TEAM_B)
        nc = await (bus.as_team(identity) if is_team else bus.as_service(identity))
        headers = build_headers(
            source="//forged", event_type=event.DESCRIPTOR.full_name, ce_subject="", event_id=uuid.uuid4().hex
        )
        with pytest.raises(Exception):  # noqa: B017 - the server refuses: no JetStream ack
            await nc.jetstream(timeout=REFUSED).publish(subject, payload, headers=headers)
        await nc.close()
    await asyncio.sleep(2.0)  # time for the scheduler to act, had anything been delivered
    job = _wait_state(bus, running_job, "JOB_STATE_RUNNING", md, timeout=5)
    assert job_pb2.JobState.Name(job.status.state) == "JOB_STATE_RUNNING"
    # Nothing forged was stored: every run event of the job came from the trainer.
    admin = await bus.as_admin()
    sub = await admin.jetstream().subscribe(
        subject, stream=contracts.JOBS_STREAM.name, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    sources = []
    try:
        while True:
            msg = await sub.next_msg(timeout=1.0)
            sources.append(msg.headers.get("ce-source"))
    except nats.errors.TimeoutError:
        pass
    assert sources and set(sources) == {"//mlmesh/trainer"}, sources
    await admin.close()


async def _until(predicate, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _cli(bus: Bus, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLMESH_")}
    env["MLMESH_STATE_DIR"] = str(bus.mesh.root)
    if token:
        env["MLMESH_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "mlmesh.cli.main", *args], env=env, capture_output=True, text=True, timeout=60
    )


def _onboard(bus: Bus, tmp_path: Path) -> tuple[dict, Path, str]:
    made = _cli(bus, "teams", "create", "bus-new", "--cpu", "2", "--memory", "1Gi", "-o", str(tmp_path), "--json")
    assert made.returncode == 0, made.stderr
    out = json.loads(made.stdout)
    token = Path(out["token_file"]).read_text().strip()
    assert oct(Path(out["creds_file"]).stat().st_mode & 0o777) == "0o600"
    queue = bus.scheduler.GetQueue(sched_api.GetQueueRequest(name="bus-new"), metadata=bearer(token), timeout=10)
    assert queue.queue.spec.team == "bus-new" and queue.queue.spec.team_default
    # The team's own token gets it fresh credentials.
    fresh = tmp_path / "fresh.creds"
    issued = _cli(bus, "events", "credentials", "-o", str(fresh), "--ttl", "1h", "--json", token=token)
    assert issued.returncode == 0, issued.stderr
    return out, fresh, json.loads(issued.stdout)["public_key"]


async def test_onboarding_a_team_is_one_command_and_its_credentials_can_be_revoked(bus, tmp_path):
    """`mlmesh teams create`: queue, token and event credentials; then the team's own
    `mlmesh events credentials`, and the operator's `mlmesh events revoke`."""
    out, fresh, key = _onboard(bus, tmp_path)
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    nc = await nats.connect(
        bus.url,
        user_credentials=str(fresh),
        inbox_prefix=contracts.inbox_prefix(nats_permissions.team_identity("bus-new")),
        allow_reconnect=False,
        closed_cb=on_closed,
    )
    revoked = _cli(bus, "events", "revoke", key)
    assert revoked.returncode == 0, revoked.stderr
    await asyncio.wait_for(closed.wait(), timeout=5)
    assert not nc.is_connected
    # The credentials from `teams create` are another user: still accepted.
    other = await nats.connect(
        bus.url,
        user_credentials=out["creds_file"],
        inbox_prefix=out["inbox_prefix"],
        allow_reconnect=False,
    )
    await other.close()


def test_every_service_writes_its_audit_chain_under_its_own_identity(bus, running_job):
    """The audit publishers work with least privilege: the scheduler's calls of this suite (queue
    creation, submit, credentials) are recorded by the scheduler's own chain, and the log verifies."""
    deadline = time.monotonic() + 60
    while True:
        listed = _cli(bus, "audit", "ls", "--service", "scheduler", "--since", "1h", "--limit", "10000", "--json")
        assert listed.returncode == 0, listed.stderr
        methods = {r["method"].rsplit("/", 1)[-1] for r in json.loads(listed.stdout)}
        wanted = {"CreateQueue", "SubmitJob", "IssueEventCredentials"}
        if wanted <= methods or time.monotonic() > deadline:
            break
        time.sleep(1)  # records are published off the RPC path
    assert wanted <= methods, methods
    verified = _cli(bus, "audit", "verify", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert not report.get("problems") and int(report["records"]) > 0, report
