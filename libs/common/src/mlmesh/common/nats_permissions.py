"""Each NATS identity's permissions, built from the contracts (subjects, streams, buckets, owners).

Least privilege, enforced by nats-server:
- a service publishes only the subjects it owns, and uses the JetStream API only for its own
  streams and buckets (create, update, read, consumers) and for the ones it is listed as reading;
- nobody but the admin may delete or purge a stream;
- replies go to per-identity inboxes (`contracts.inbox_prefix`), so no identity reads another's;
- a team subscribes to its own subjects and creates consumers filtered to them (the filter is part
  of the API subject, `$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`), nothing else.
"""

from __future__ import annotations

from mlmesh.common import contracts as c
from mlmesh.common.nats_auth import Permissions

JS = "$JS.API"
ADMIN = "admin"
TEAM_TEMPLATE = c.TEAM_TEMPLATE  # team_permissions(TEAM_TEMPLATE): the team signing key's scope
# Stream deletion and purging belong to the operator alone; denied explicitly on top of the allow
# lists, so a later grant cannot open them by accident.
DESTRUCTIVE = (f"{JS}.STREAM.DELETE.>", f"{JS}.STREAM.PURGE.>", f"{JS}.STREAM.MSG.DELETE.>")


def _read_stream(stream: str) -> list[str]:
    """Read a stream through the identity's own consumers (pull or push) and direct gets."""
    return [
        f"{JS}.STREAM.INFO.{stream}",
        f"{JS}.STREAM.MSG.GET.{stream}",
        f"{JS}.DIRECT.GET.{stream}",
        f"{JS}.DIRECT.GET.{stream}.>",
        f"{JS}.CONSUMER.CREATE.{stream}",
        f"{JS}.CONSUMER.CREATE.{stream}.>",
        f"{JS}.CONSUMER.DURABLE.CREATE.{stream}.*",
        f"{JS}.CONSUMER.INFO.{stream}.*",
        f"{JS}.CONSUMER.DELETE.{stream}.*",
        f"{JS}.CONSUMER.MSG.NEXT.{stream}.*",
        f"$JS.ACK.{stream}.>",
    ]


def _own_stream(stream: str) -> list[str]:
    return [f"{JS}.STREAM.CREATE.{stream}", f"{JS}.STREAM.UPDATE.{stream}", *_read_stream(stream)]


def service_permissions(identity: str) -> Permissions:
    if identity not in c.SERVICE_IDENTITIES:
        raise ValueError(f"unknown NATS identity {identity!r}")
    api: list[str] = []  # the JetStream API subjects it may use
    for spec in c.streams_owned_by(identity):
        api += _own_stream(spec.name)
    for name in c.READS_STREAMS.get(identity, ()):
        api += _read_stream(name)
    for spec in c.buckets_owned_by(identity):
        api += [*_own_stream(c.kv_stream(spec.name)), f"$KV.{spec.name}.>"]
    for spec in c.buckets_read_by(identity):
        api += _read_stream(c.kv_stream(spec.name))
    api += _audit(identity)
    if api:
        # Stream lookup by subject (nats-py's subscribe), account info, and push-consumer flow control.
        api += [f"{JS}.INFO", f"{JS}.STREAM.NAMES", "$JS.FC.>"]
    pub = [*c.PUBLISHES.get(identity, ()), *api]
    sub = [f"{c.inbox_prefix(identity)}.>", *c.SUBSCRIBES.get(identity, ())]
    return Permissions(pub_allow=_unique(pub), sub_allow=_unique(sub), pub_deny=DESTRUCTIVE)


def _audit(identity: str) -> list[str]:
    """Every identity with an API publishes its own audit chains and anchors; telemetry owns both."""
    if identity == c.WORKER:
        return []
    anchors = c.kv_stream(c.AUDIT_ANCHORS)
    if identity == c.AUDIT_OWNER:
        return [*_own_stream(c.AUDIT_STREAM), *_own_stream(anchors), "mlmesh.audit.>", f"$KV.{c.AUDIT_ANCHORS}.>"]
    return [
        c.service_audit_subjects(identity),
        f"$KV.{c.AUDIT_ANCHORS}.{identity}.*",
        f"{JS}.STREAM.INFO.{anchors}",
        # Its chain's last record after a lost ack (a read of the audit stream, no write).
        f"{JS}.STREAM.MSG.GET.{c.AUDIT_STREAM}",
    ]


def team_permissions(team: str) -> Permissions:
    """Event credentials of a team: read its own events live or replay them; no KV, no publish."""
    pub = [f"{JS}.STREAM.NAMES", "$JS.FC.>"]
    for stream, flt in c.team_streams(team):
        # Any consumer name, but only with the team's own filter (push delivery into its inbox).
        pub.append(f"{JS}.CONSUMER.CREATE.{stream}.*.{flt}")
    sub = [f"{c.inbox_prefix(team_identity(team))}.>", *c.team_subjects(team)]
    return Permissions(pub_allow=_unique(pub), sub_allow=_unique(sub), pub_deny=(*DESTRUCTIVE, "mlmesh.>", "$KV.>"))


def admin_permissions() -> Permissions:
    """The platform operator (the local admin, CLI tools and tests): everything."""
    return Permissions(pub_allow=(">",), sub_allow=(">",))


def team_identity(team: str) -> str:
    return f"team_{c.team_token(team)}"


def _unique(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
