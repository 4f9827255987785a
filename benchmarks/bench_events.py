"""Cost of the event bus and KV helpers over raw JetStream calls, against a real nats-server.

- publish: `EventPublisher.publish` (CloudEvents headers, Nats-Msg-Id, traceparent, proto3 JSON)
  vs `js.publish` of the same JSON bytes with no headers (baseline);
- KV: `KvRepository.update` with compare-and-set on revision vs a blind `kv.put` (baseline).

    .venv/bin/python benchmarks/bench_events.py [--ops 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from google.protobuf import json_format

sys.path.insert(0, str(Path(__file__).parent))
from _common import report, summarize

from mlmesh.api.events.v1 import events_pb2
from mlmesh.common import events
from mlmesh.common.kv import KvRepository, open_bucket
from mlmesh.local.servers import NatsServer


async def _timed(op, n: int) -> list[float]:
    for _ in range(100):
        await op()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        await op()
        samples.append(time.perf_counter() - t)
    return samples


async def run(url: str, ops: int, creds: dict) -> None:
    nc = await events.connect(url, "bench", **creds)
    js = nc.jetstream()
    await events.ensure_streams(js)
    msg = events_pb2.JobStateChanged(job_id="job-1", team="team-a", reason="Admitted", attempt=1)
    payload = json_format.MessageToJson(msg, indent=None).encode()
    publisher = events.EventPublisher(js, source="//mlmesh/bench")
    subject = "mlmesh.jobs.team-a.job-1.state"

    kv = await open_bucket(js, "bench")
    repo = KvRepository(kv, events_pb2.JobStateChanged, "bench")
    revision = await repo.create("job-1", msg)

    async def cas_update():
        nonlocal revision
        revision = await repo.update("job-1", msg, revision)

    cases: dict[str, list[float]] = {}
    for _ in range(2):  # alternate so machine drift hits every case alike
        for case, op in (
            ("js.publish raw JSON (baseline)", lambda: js.publish(subject, payload)),
            ("EventPublisher.publish (CloudEvent)", lambda: publisher.publish(subject, msg, ce_subject="job-1")),
            ("kv.put blind (KV baseline)", lambda: kv.put("job-2", payload)),
            ("KvRepository.update (CAS)", cas_update),
        ):
            cases.setdefault(case, []).extend(await _timed(op, ops // 2))
    await nc.drain()
    rows = [{"case": c, **summarize(s)} for c, s in cases.items()]
    report("events_publish", rows[:2], baseline="js.publish raw JSON (baseline)")
    report("kv_cas", rows[2:], baseline="kv.put blind (KV baseline)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp))
        server.start()
        try:
            asyncio.run(run(server.url, args.ops, server.client_options()))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
