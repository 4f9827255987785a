"""A team's event credentials against a real nats-server of its own (it is restarted here):
replay from the first event then live across a server restart, with plain nats-py; expiry;
revocation pushed to the running server.

The credentials come from the scheduler's issuer (`EventCredentialIssuer`), signed with the
account signing key exactly as TeamAccessService signs them.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import nkeys
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from mlmesh.common import contracts, events, nats_permissions
from mlmesh.common.nats_auth import issue_user, push_account
from mlmesh.local.servers import NatsServer
from mlmesh.scheduler.team_access import EventCredentialIssuer

pytestmark = pytest.mark.timeout(120)

TEAM = "team-a"


@pytest.fixture
def server(tmp_path: Path):
    srv = NatsServer(tmp_path / "nats")
    srv.start(timeout=60)
    srv.bootstrap()
    try:
        yield srv
    finally:
        srv.stop()


def issuer(srv: NatsServer) -> EventCredentialIssuer:
    return EventCredentialIssuer.from_files(srv.trust_dir / "account_signing.nk", srv.trust.public_key("account"))


async def publish_states(srv: NatsServer, jobs: range) -> None:
    """What the scheduler publishes, as the scheduler's identity."""
    nc = await events.connect(srv.url, "fake-scheduler", **srv.client_options(contracts.SCHEDULER))
    js = nc.jetstream()
    for i in jobs:
        await js.publish(contracts.job_subject(TEAM, f"j{i}", contracts.JOB_STATE), f'{{"n": {i}}}'.encode())
    await nc.close()


def team_connect_options(creds: Path) -> dict:
    inbox = contracts.inbox_prefix(nats_permissions.team_identity(TEAM))
    return {"user_credentials": str(creds), "inbox_prefix": inbox}


async def test_team_replays_from_the_start_then_follows_live_across_a_server_restart(server, tmp_path):
    await publish_states(server, range(3))
    creds = issuer(server).issue(TEAM, ttl_s=3600).write(tmp_path / "team.creds")
    got: list[bytes] = []

    async def on_msg(msg) -> None:
        got.append(msg.data)

    # A plain nats-py subscriber, as the README shows a team.
    nc = await nats.connect(
        server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, **team_connect_options(creds)
    )
    js = nc.jetstream()
    await js.subscribe(
        contracts.team_jobs(TEAM),
        stream=contracts.JOBS_STREAM.name,
        cb=on_msg,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
        config=ConsumerConfig(name="team-a-follower"),
    )
    await _until(lambda: len(got) >= 3, "the replay")
    assert got[:3] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']  # from sequence 1, in order

    server.restart(timeout=60)  # same port, same JetStream store, same trust
    await publish_states(server, range(3, 5))
    await _until(lambda: len(got) >= 5, "live events after the restart", timeout=60)
    assert got == [f'{{"n": {i}}}'.encode() for i in range(5)]  # nothing lost, nothing twice
    await nc.close()


async def test_expired_credentials_are_refused(server, tmp_path):
    creds = server.trust.issue(
        nats_permissions.team_identity(TEAM), nats_permissions.team_permissions(TEAM), ttl_s=2
    ).write(tmp_path / "short.creds")
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    nc = await nats.connect(server.url, allow_reconnect=False, closed_cb=on_closed, **team_connect_options(creds))
    assert nc.is_connected
    await asyncio.wait_for(closed.wait(), timeout=10)  # the server drops the user when the JWT expires
    await asyncio.sleep(1.1)  # `exp` has whole seconds: past the second it names
    with pytest.raises(Exception, match=r"(?i)authorization|expired"):
        await nats.connect(server.url, allow_reconnect=False, **team_connect_options(creds))


async def test_revoked_credentials_are_dropped_at_once_and_refused(server, tmp_path):
    issued = issuer(server).issue(TEAM, ttl_s=3600)
    creds = issued.write(tmp_path / "team.creds")
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    nc = await nats.connect(server.url, allow_reconnect=False, closed_cb=on_closed, **team_connect_options(creds))
    trust = server.trust
    trust.revoke(issued.public_key)
    began = time.monotonic()
    await push_account(server.url, server.system_creds(), trust.account_jwt())
    await asyncio.wait_for(closed.wait(), timeout=5)
    took = time.monotonic() - began
    assert took < 5, f"revoked user still connected after {took:.2f}s"
    assert not nc.is_connected
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await nats.connect(server.url, allow_reconnect=False, **team_connect_options(creds))
    # Another credential of the same team, issued after, still works.
    fresh = issuer(server).issue(TEAM, ttl_s=3600).write(tmp_path / "fresh.creds")
    other = await nats.connect(server.url, allow_reconnect=False, **team_connect_options(fresh))
    await other.close()


async def _until(predicate, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_the_team_signing_key_cannot_mint_a_service_or_an_admin(server, tmp_path):
    """The scheduler holds the team signing key: a user it signs with permissions of its own (an
    attempt at an admin) is refused, and a user tagged for a team gets that team's scope only."""
    signing = nkeys.from_seed((server.trust_dir / "account_signing.nk").read_bytes().strip())
    account = server.trust.public_key("account")
    forged = issue_user(signing, account, "evil-admin", nats_permissions.admin_permissions()).write(
        tmp_path / "e.creds"
    )
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await nats.connect(server.url, user_credentials=str(forged), allow_reconnect=False)
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    creds = issuer(server).issue(TEAM, ttl_s=3600).write(tmp_path / "team.creds")
    nc = await nats.connect(server.url, allow_reconnect=False, error_cb=on_error, **team_connect_options(creds))
    await nc.subscribe(contracts.team_jobs("team-b"))
    await nc.publish(contracts.job_subject(TEAM, "j", contracts.JOB_RUN), b"{}")
    await nc.flush()
    await _until(lambda: len(errors) >= 2, "both refusals")
    assert any("subscription" in e for e in errors) and any("publish" in e for e in errors), errors
    await nc.close()
