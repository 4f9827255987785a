"""The contracts and the permission tables built from them: pure checks, no server (the real
server's enforcement is tested in tests/e2e/test_event_bus_security.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlmesh.common import contracts as c
from mlmesh.common import nats_permissions as p

REPO = Path(__file__).resolve().parents[2]


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, a final `>` one or more."""
    pt, st = pattern.split("."), subject.split(".")
    for i, token in enumerate(pt):
        if token == ">":
            return len(st) > i
        if i >= len(st) or (token != "*" and token != st[i]):
            return False
    return len(pt) == len(st)


def allowed(perms: tuple[str, ...], denied: tuple[str, ...], subject: str) -> bool:
    return any(matches(a, subject) for a in perms) and not any(matches(d, subject) for d in denied)


FORGED_RUN = c.job_subject("team-a", "job-1", c.JOB_RUN)


@pytest.mark.parametrize("identity", c.SERVICE_IDENTITIES)
def test_only_the_trainer_may_publish_a_run_outcome(identity):
    perms = p.service_permissions(identity)
    assert allowed(perms.pub_allow, perms.pub_deny, FORGED_RUN) == (identity == c.TRAINER)


@pytest.mark.parametrize("identity", c.SERVICE_IDENTITIES)
def test_each_identity_publishes_only_what_it_owns(identity):
    perms = p.service_permissions(identity)
    samples = {
        c.job_subject("t", "j", c.JOB_STATE): c.SCHEDULER,
        c.job_subject("t", "j", c.JOB_PROGRESS): c.TRAINER,
        c.node_subject("n", c.NODE_STATE): c.FABRIC,
        c.node_subject("n", c.NODE_HEARTBEAT): c.AGENT,
        c.worker_exited_subject("n", "r"): c.AGENT,
        c.artifact_subject("t", "a", "committed"): c.STORAGE,
        c.model_subject("m", "1", c.MODEL_REGISTERED): c.STORAGE,
        c.deployment_subject("t", "d"): c.GATEWAY,
        c.alert_subject("critical", "gpu"): c.TELEMETRY,
        c.worker_report_subject("r", "result"): c.WORKER,
    }
    for subject, owner in samples.items():
        assert allowed(perms.pub_allow, perms.pub_deny, subject) == (identity == owner), subject


@pytest.mark.parametrize("identity", c.SERVICE_IDENTITIES)
def test_kv_writes_only_to_own_buckets_and_no_stream_deletion(identity):
    perms = p.service_permissions(identity)
    for spec in c.BUCKETS:
        may_write = allowed(perms.pub_allow, perms.pub_deny, f"$KV.{spec.name}.some-key")
        assert may_write == (spec.owner == identity), spec.name
    for stream in [s.name for s in c.STREAMS] + [c.AUDIT_STREAM]:
        for verb in ("DELETE", "PURGE"):
            assert not allowed(perms.pub_allow, perms.pub_deny, f"$JS.API.STREAM.{verb}.{stream}")
        assert not allowed(perms.pub_allow, perms.pub_deny, f"$JS.API.STREAM.MSG.DELETE.{stream}")


def test_the_gateway_cannot_write_the_jobs_bucket():
    perms = p.service_permissions(c.GATEWAY)
    assert not allowed(perms.pub_allow, perms.pub_deny, f"$KV.{c.JOBS}.job-1")


def test_a_team_reads_only_its_own_subjects_and_never_publishes_into_the_platform():
    perms = p.team_permissions("team-b")
    for subject in (
        c.job_subject("team-b", "j", c.JOB_STATE),
        c.artifact_subject("team-b", "a", "committed"),
        c.deployment_subject("team-b", "d"),
        c.alert_subject("warning", "job_failure_rate", "team-b"),
    ):
        assert allowed(perms.sub_allow, perms.sub_deny, subject)
    for subject in (
        c.job_subject("team-a", "j", c.JOB_STATE),
        c.artifact_subject("team-a", "a", "committed"),
        c.node_subject("n", c.NODE_HEARTBEAT),
        c.alert_subject("critical", "node_not_ready"),  # a platform alert
        c.alert_subject("warning", "job_failure_rate", "team-a"),
        "_INBOX.x",
        f"{c.inbox_prefix(c.SCHEDULER)}.x",
    ):
        assert not allowed(perms.sub_allow, perms.sub_deny, subject), subject
    for subject in (
        FORGED_RUN,
        c.job_subject("team-b", "j", c.JOB_RUN),
        f"$KV.{c.JOBS}.x",
        "$JS.API.STREAM.DELETE.MLMESH_JOBS",
    ):
        assert not allowed(perms.pub_allow, perms.pub_deny, subject), subject
    create = "$JS.API.CONSUMER.CREATE.MLMESH_JOBS.mine"
    assert allowed(perms.pub_allow, perms.pub_deny, f"{create}.{c.team_jobs('team-b')}")
    assert not allowed(perms.pub_allow, perms.pub_deny, f"{create}.{c.team_jobs('team-a')}")
    assert not allowed(perms.pub_allow, perms.pub_deny, "$JS.API.CONSUMER.CREATE.MLMESH_JOBS")  # no filter
    assert not allowed(perms.pub_allow, perms.pub_deny, f"{create}.mlmesh.jobs.>")
    assert not allowed(perms.pub_allow, perms.pub_deny, "$JS.API.CONSUMER.MSG.NEXT.MLMESH_JOBS.scheduler-run-events")


def test_team_inboxes_cannot_collide():
    assert c.inbox_prefix(p.team_identity("a-b")) != c.inbox_prefix(p.team_identity("a_b"))


def test_every_stored_subject_falls_into_exactly_one_stream():
    stored = [s for subjects in c.PUBLISHES.values() for s in subjects if not s.startswith("mlmesh.trainer.")]
    for subject in stored:
        concrete = subject.replace("*", "x")
        homes = [s.name for s in c.STREAMS if any(matches(pat, concrete) for pat in s.subjects)]
        assert len(homes) == 1, (subject, homes)


def test_subject_tokens_cannot_widen_a_subject():
    for bad in ("a.b", "*", ">", "a b", ""):
        with pytest.raises(Exception, match="subject"):
            c.job_subject(bad, "j", c.JOB_STATE)


def test_no_platform_subject_is_built_outside_the_contracts():
    """Permissions are granted per subject: a subject built elsewhere would drift from them."""
    built = re.compile(r"""f["']mlmesh\.(jobs|fabric|storage|models|deployments|alerts|audit|trainer)\.""")
    offenders = [
        f"{path.relative_to(REPO)}:{n}"
        for root in ("services", "libs")
        for path in (REPO / root).rglob("*.py")
        if "/tests/" not in str(path) and "/api/" not in str(path)
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if built.search(line)
    ]
    assert offenders == []
