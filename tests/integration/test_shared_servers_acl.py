"""The shared servers protect themselves, checked against the real servers: valkey lets in only the
gateway's ACL user, and only to its keys and commands; SeaweedFS's S3 API only the storage
service's identity, and only on its bucket; every server listens on loopback only.

Each test fails when the server's protection is switched off (a default user, `~*`, unscoped or
anonymous S3 actions, a wildcard bind)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import boto3
import pytest
import valkey
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from mlmesh.common.errors import QuotaExceeded
from mlmesh.common.valkey_acl import GATEWAY_KEY_PREFIX
from mlmesh.gateway.cache import GuardedValkey, ResultCache
from mlmesh.gateway.domain.cache_key import cache_key
from mlmesh.gateway.rate_limit import RateLimiter, rate_key
from mlmesh.local.servers import S3Server, TritonServer, ValkeyServer

pytestmark = pytest.mark.timeout(120)

KEY = f"{GATEWAY_KEY_PREFIX}acl-test"


# --- valkey --------------------------------------------------------------------------------------


def _raw(server: ValkeyServer) -> valkey.Valkey:
    """A connection that authenticates only when told to (AUTH by hand)."""
    return valkey.Valkey(host=server.host, port=server.port, socket_timeout=5)


def test_valkey_default_user_cannot_authenticate(valkey_server: ValkeyServer) -> None:
    with _raw(valkey_server) as anonymous:
        with pytest.raises(valkey.exceptions.AuthenticationError):  # NOAUTH: no implicit default user
            anonymous.ping()
        # `AUTH <password>` is `AUTH default <password>`: refused for any password, the gateway's too.
        for auth in (["default", "anything"], ["default", ""], ["default", valkey_server.password]):
            with pytest.raises(valkey.exceptions.AuthenticationError):
                anonymous.execute_command("AUTH", *auth)
        with pytest.raises(valkey.exceptions.AuthenticationError):
            anonymous.execute_command("AUTH", valkey_server.password)
        with pytest.raises(valkey.exceptions.AuthenticationError):
            anonymous.execute_command("AUTH", valkey_server.user, "not-the-password")


def test_valkey_gateway_user_is_confined_to_its_keys_and_commands(valkey_server: ValkeyServer) -> None:
    assert valkey_server.url.startswith(f"redis://{valkey_server.user}:")
    with valkey.Valkey.from_url(valkey_server.url, socket_timeout=5) as gw:
        assert gw.set(KEY, b"v", px=60_000) and gw.get(KEY) == b"v"
        for outside in ("other", "mlmesh:infer:x", "mlmesh:gw"):
            with pytest.raises(valkey.exceptions.NoPermissionError):
                gw.get(outside)
            with pytest.raises(valkey.exceptions.NoPermissionError):
                gw.set(outside, b"v")
        for command in (
            ("CONFIG", "GET", "*"),
            ("CONFIG", "SET", "maxmemory", "1"),
            ("FLUSHALL",),
            ("FLUSHDB",),
            ("KEYS", "*"),
            ("SCAN", "0"),
            ("CLIENT", "LIST"),
            ("ACL", "LIST"),
            ("SCRIPT", "FLUSH"),
            ("FUNCTION", "FLUSH"),
            ("SHUTDOWN",),
        ):
            with pytest.raises(valkey.exceptions.NoPermissionError):
                gw.execute_command(*command)
        # A script runs with its caller's ACL: it cannot reach another key either.
        with pytest.raises(valkey.exceptions.ResponseError, match=r"(?i)permission"):
            gw.eval("return redis.call('GET', 'other')", 0)
        assert gw.get(KEY) == b"v"  # nothing above touched the data


async def test_valkey_gateway_cache_and_rate_limit_work_under_the_acl(valkey_server: ValkeyServer) -> None:
    """The gateway's own code: a failing call would be a silent miss (or allow), so assert results."""
    host, port = valkey_server.host, valkey_server.port
    # As `mlmesh up` passes it (user and password in the URL) and as deploy/k8s does (password apart).
    for url, password in (
        (valkey_server.url, None),
        (f"redis://{valkey_server.user}@{host}:{port}/0", valkey_server.password),
    ):
        store = GuardedValkey(url, password, timeout_s=2.0)
        try:
            cache = ResultCache(store, default_ttl_s=60)
            key = cache_key("team-acl", "double", "1", os.urandom(8).hex())
            assert key.startswith(GATEWAY_KEY_PREFIX)
            assert await cache.set(key, b"reply") and await cache.get(key) == b"reply"
            # EVALSHA, SCRIPT LOAD on NOSCRIPT, and TIME/HMGET/HSET/PEXPIRE inside the script.
            limiter = RateLimiter(store, rate_per_s=0.01, burst=2)
            team = "acl-" + os.urandom(4).hex()
            assert rate_key(team).startswith(GATEWAY_KEY_PREFIX)
            await limiter.check(team)
            await limiter.check(team)
            with pytest.raises(QuotaExceeded):  # fails open (no raise) if the script were refused
                await limiter.check(team)
        finally:
            await store.close()


# --- S3 (SeaweedFS) --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_object(s3_server: S3Server) -> str:
    """An object in the storage bucket, so a refusal below is not a missing bucket or key."""
    s3 = s3_server.client()
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        s3.create_bucket(Bucket=s3_server.bucket)
    key = f"acl-test/{os.urandom(4).hex()}"
    s3.put_object(Bucket=s3_server.bucket, Key=key, Body=b"payload")
    return key


def _denied(call) -> int:
    with pytest.raises(ClientError) as denied:
        call()
    return denied.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_s3_refuses_anonymous_requests(s3_server: S3Server, s3_object: str) -> None:
    anonymous = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        region_name=s3_server.region,
        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}),
    )
    bucket = s3_server.bucket
    assert _denied(lambda: anonymous.list_objects_v2(Bucket=bucket)) == 403
    assert _denied(lambda: anonymous.get_object(Bucket=bucket, Key=s3_object)) == 403
    assert _denied(lambda: anonymous.put_object(Bucket=bucket, Key="anon", Body=b"x")) == 403
    assert _denied(anonymous.list_buckets) == 403


def test_s3_refuses_wrong_credentials(s3_server: S3Server, s3_object: str) -> None:
    for access_key, secret_key in ((s3_server.access_key, "not-the-secret"), ("nobody", s3_server.secret_key)):
        wrong = boto3.client(
            "s3",
            endpoint_url=s3_server.endpoint_url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=s3_server.region,
            config=Config(retries={"max_attempts": 1}),
        )
        assert _denied(lambda c=wrong: c.get_object(Bucket=s3_server.bucket, Key=s3_object)) == 403
        assert _denied(lambda c=wrong: c.list_objects_v2(Bucket=s3_server.bucket)) == 403


def test_s3_storage_identity_works_on_its_bucket_only(s3_server: S3Server, s3_object: str) -> None:
    s3, bucket = s3_server.client(), s3_server.bucket
    assert s3.get_object(Bucket=bucket, Key=s3_object)["Body"].read() == b"payload"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="acl-test/")
    assert s3_object in {o["Key"] for o in listed["Contents"]}
    s3.put_object(Bucket=bucket, Key=s3_object + ".2", Body=b"more")
    s3.delete_object(Bucket=bucket, Key=s3_object + ".2")
    # Another bucket: it may neither create one nor use one.
    other = "other-" + os.urandom(4).hex()
    assert _denied(lambda: s3.create_bucket(Bucket=other)) == 403
    assert _denied(lambda: s3.put_object(Bucket=other, Key="k", Body=b"x")) == 403
    assert _denied(lambda: s3.list_objects_v2(Bucket=other)) == 403
    assert {b["Name"] for b in s3.list_buckets()["Buckets"]} <= {bucket}


# --- every server on loopback ----------------------------------------------------------------------


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket listening in pid's process group, from /proc."""
    inodes = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pid:
                continue
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                found.add((address, int(port, 16)))
    return found


# 127.0.0.1 as /proc/net/tcp writes it (little-endian hex words), and as tcp6 writes the IPv4-mapped
# ::ffff:127.0.0.1 that Triton's gRPC binds.
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}


@pytest.mark.parametrize("fixture", ["valkey_server", "s3_server", "triton_server"])
def test_servers_listen_on_loopback_only(fixture: str, request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue(fixture)
    listening = _listening(server.process.pid)
    assert listening, f"no listening sockets found for {fixture}"
    assert {address for address, _ in listening} <= LOOPBACK, listening
    if isinstance(server, TritonServer):  # HTTP, gRPC and metrics, nothing else
        assert {port for _, port in listening} == {server.port, server.grpc_port, server.metrics_port}
