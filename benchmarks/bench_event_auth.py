"""What NATS authentication costs an event: publish to delivery, with auth against without.

Two real nats-servers in the same run: one in operator mode (decentralized JWT; the publisher is
the scheduler's identity, the subscriber a team's event credentials, as in the mesh) and one
without auth (the baseline; nothing in mlmesh runs this way). On each: the scheduler's
`EventPublisher.publish` of a JobStateChanged into MLMESH_JOBS, received by an ordered push
consumer filtered to the team's subjects; the latency is publish call to delivery callback. The
cases alternate round by round, so drift of the shared machine hits both alike. Also: the time to
connect (CONNECT with the signed nonce and the user JWT) on each server.

    .venv/bin/python benchmarks/bench_event_auth.py [--events 500] [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

sys.path.insert(0, str(Path(__file__).parent))
from _common import report, summarize

from mlmesh.api.events.v1 import events_pb2
from mlmesh.common import contracts, events, nats_permissions
from mlmesh.common.nats_auth import push_account
from mlmesh.local.servers import NatsServer

TEAM = "bench-team"


class Case:
    def __init__(self, name: str, server: NatsServer):
        self.name, self.server = name, server

    def publisher_options(self) -> dict:
        return self.server.client_options(contracts.SCHEDULER) if self.server.auth else {}

    def subscriber_options(self) -> dict:
        if not self.server.auth:
            return {}
        identity = nats_permissions.team_identity(TEAM)
        return {"user_credentials": str(self.server.creds(identity)), "inbox_prefix": contracts.inbox_prefix(identity)}


async def one_round(case: Case, n: int) -> list[float]:
    pub = await events.connect(case.server.url, "bench-pub", **case.publisher_options())
    sub = await nats.connect(case.server.url, **case.subscriber_options())
    publisher = events.EventPublisher(pub.jetstream(), source="//mlmesh/scheduler")
    pending: dict[str, tuple[float, asyncio.Future]] = {}
    latencies: list[float] = []

    async def on_msg(msg) -> None:
        entry = pending.pop(msg.headers.get("ce-id", ""), None)
        if entry is not None:
            latencies.append(time.perf_counter() - entry[0])
            entry[1].set_result(None)

    await sub.jetstream().subscribe(
        contracts.team_jobs(TEAM),
        stream=contracts.JOBS_STREAM.name,
        cb=on_msg,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.NEW,
        config=ConsumerConfig(name=f"bench-{time.monotonic_ns()}"),
    )
    msg = events_pb2.JobStateChanged(job_id="job-1", team=TEAM, reason="Admitted", attempt=1)
    subject = contracts.job_subject(TEAM, "job-1", contracts.JOB_STATE)
    loop = asyncio.get_running_loop()
    for i in range(n):  # one at a time: latency, not throughput
        event_id = f"{time.monotonic_ns()}-{i}"
        delivered = loop.create_future()
        pending[event_id] = (time.perf_counter(), delivered)
        await publisher.publish(subject, msg, event_id=event_id)
        await asyncio.wait_for(delivered, timeout=10)
    await sub.close()
    await pub.close()
    return latencies


async def connect_times(case: Case, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        nc = await nats.connect(case.server.url, **case.subscriber_options())
        samples.append(time.perf_counter() - t)
        await nc.close()
    return samples


async def revocation_times(server: NatsServer, n: int) -> list[float]:
    """Push of a revoked key to the moment the server has closed that user's connection."""
    identity = nats_permissions.team_identity(TEAM)
    samples = []
    for i in range(n):
        creds = server.trust.issue(identity, nats_permissions.team_permissions(TEAM), ttl_s=3600)
        path = creds.write(server.trust_dir / "creds" / f"revoked-{i}.creds")
        closed = asyncio.Event()

        async def on_closed(closed=closed) -> None:
            closed.set()

        await nats.connect(
            server.url,
            user_credentials=str(path),
            inbox_prefix=contracts.inbox_prefix(identity),
            allow_reconnect=False,
            closed_cb=on_closed,
        )
        server.trust.revoke(creds.public_key)
        t = time.perf_counter()
        await push_account(server.url, server.system_creds(), server.trust.account_jwt())
        await asyncio.wait_for(closed.wait(), timeout=10)
        samples.append(time.perf_counter() - t)
    return samples


async def run(cases: list[Case], n: int, rounds: int) -> None:
    latency: dict[str, list[float]] = {c.name: [] for c in cases}
    connect: dict[str, list[float]] = {c.name: [] for c in cases}
    for _ in range(rounds):
        for case in cases:
            latency[case.name] += await one_round(case, n)
            connect[case.name] += await connect_times(case, 20)
    report("event_auth_latency", [{"case": k, **summarize(v)} for k, v in latency.items()], baseline=cases[0].name)
    report("event_auth_connect", [{"case": k, **summarize(v)} for k, v in connect.items()], baseline=cases[0].name)
    revoked = {"revocation push -> connection closed": await revocation_times(cases[1].server, 10)}
    report(
        "event_auth_revocation", [{"case": k, **summarize(v)} for k, v in revoked.items()], baseline=next(iter(revoked))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500, help="events per case per round")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plain = NatsServer(Path(tmp) / "plain", auth=False)
        secured = NatsServer(Path(tmp) / "auth")
        servers = [plain, secured]
        try:
            for server in servers:
                server.start()
                server.bootstrap() if server.auth else asyncio.run(_plain_streams(server.url))
            cases = [Case("no auth (baseline)", plain), Case("JWT auth, least privilege", secured)]
            asyncio.run(run(cases, args.events, args.rounds))
        finally:
            for server in servers:
                server.stop()


async def _plain_streams(url: str) -> None:
    nc = await events.connect(url, "bench-bootstrap")
    await events.ensure_bus(nc.jetstream())
    await nc.close()


if __name__ == "__main__":
    main()
