"""The audit log's contracts (stream, subjects, anchors), its record chain and its verification.

Every mutating RPC becomes one record on `mlmesh.audit.<service>.<instance>` in MLMESH_AUDIT. Each
publishing process keeps a hash chain of its own (replicas never contend for one head): a record
holds `seq`, `prev_hash` and `hash` = SHA-256 of its canonical JSON without `hash`. JetStream
refuses to delete or purge the stream's messages, and every instance anchors its chain head in the
`audit_anchors` bucket, so an edited, deleted, reordered or cut-off record shows up in `verify`.

The I/O lives in `audit_log` (publisher, reader); this module is pure apart from `ensure_audit_stream`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from itertools import pairwise

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType, StreamConfig
from nats.js.errors import BucketNotFoundError, NotFoundError

# The names live with every other subject, stream and bucket (the NATS permissions read them there);
# the anchors bucket's key is anchor_key(service, instance) and its value an Anchor.
from mlmesh.common.contracts import (  # noqa: F401 (re-exported)
    AUDIT_ANCHORS,
    AUDIT_OWNER,
    AUDIT_STREAM,
    AUDIT_SUBJECTS,
    audit_subject,
    service_audit_subjects,
    subject_token,
)
from mlmesh.common.errors import InvalidArgument

DAY_S = 24 * 3600.0

# --- contracts ----------------------------------------------------------------------------------
AUDIT_MAX_AGE_S = 365 * DAY_S
AUDIT_DUPLICATE_WINDOW_S = 120.0  # a publish retried after a lost ack is stored once

FORMAT = 1
GENESIS = "0" * 64  # prev_hash of a chain's first record
RPC, DROPPED_MARK, FORKED_MARK = "rpc", "dropped", "forked"  # record kinds


def new_instance() -> str:
    """A short random id for one publishing process (one chain)."""
    return secrets.token_hex(4)


def anchor_key(service: str, instance: str) -> str:
    """The service leads the key so a NATS permission can confine each identity to its own anchors
    (`$KV.audit_anchors.<service>.*`), as to its own chains."""
    return f"{subject_token(service, 'service')}.{subject_token(instance, 'instance')}"


def audit_stream_config(replicas: int = 1) -> StreamConfig:
    # deny_delete/deny_purge: no API call removes a record; NATS refuses to lift them on update.
    return StreamConfig(
        name=AUDIT_STREAM,
        subjects=list(AUDIT_SUBJECTS),
        storage=StorageType.FILE,
        max_age=AUDIT_MAX_AGE_S,
        duplicate_window=AUDIT_DUPLICATE_WINDOW_S,
        num_replicas=replicas,
        deny_delete=True,
        deny_purge=True,
    )


def anchors_bucket_config(replicas: int = 1) -> KeyValueConfig:
    # Anchors expire like records do; `verify` tells an expired chain from a cut one by stream seq.
    return KeyValueConfig(
        bucket=AUDIT_ANCHORS, history=1, ttl=AUDIT_MAX_AGE_S, storage=StorageType.FILE, replicas=replicas
    )


async def ensure_audit_stream(js: JetStreamContext, replicas: int = 1) -> None:
    """Create or update MLMESH_AUDIT and the anchors bucket (idempotent)."""
    config = audit_stream_config(replicas)
    try:
        await js.stream_info(AUDIT_STREAM)
        await js.update_stream(config)
    except NotFoundError:
        await js.add_stream(config)
    try:
        await js.key_value(AUDIT_ANCHORS)
    except BucketNotFoundError:
        await js.create_key_value(anchors_bucket_config(replicas))


# --- records ------------------------------------------------------------------------------------
def utc_time(epoch_s: float) -> str:
    """RFC 3339, UTC, milliseconds: `2026-01-31T12:00:00.123Z`."""
    moment = datetime.fromtimestamp(epoch_s, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now() -> str:
    return utc_time(time.time())


def canonical(record: Mapping) -> bytes:
    """The bytes a record's hash covers: sorted-key compact JSON of every field but `hash`."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(record: Mapping) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


def encode(record: Mapping) -> bytes:
    return json.dumps(dict(record), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Chain:
    """One process's chain head. `seal` builds the next record; `advance` once it is stored."""

    def __init__(self, service: str, instance: str):
        self.service = service
        self.instance = instance
        self.seq = 0
        self.head = GENESIS
        self.stream_seq = 0  # JetStream sequence of the head record (0: none yet)

    def seal(self, entry: Mapping) -> dict:
        record = {
            **entry,
            "v": FORMAT,
            "service": self.service,
            "instance": self.instance,
            "seq": self.seq + 1,
            "prev_hash": self.head,
            # Where the predecessor lives: tells a predecessor that expired (max_age) from one removed.
            "prev_stream_seq": self.stream_seq,
        }
        record["hash"] = record_hash(record)
        return record

    def advance(self, record: Mapping, stream_seq: int) -> None:
        self.seq, self.head, self.stream_seq = record["seq"], record["hash"], stream_seq


@dataclass(frozen=True)
class Anchor:
    """A chain head as of `time`: every record up to `seq` must still be in the log."""

    instance: str
    service: str
    seq: int
    hash: str
    stream_seq: int
    time: str

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Anchor:
        d = json.loads(raw)
        return cls(
            str(d["instance"]), str(d["service"]), int(d["seq"]), str(d["hash"]), int(d["stream_seq"]), str(d["time"])
        )


# --- verification -------------------------------------------------------------------------------
EDITED, DELETED, REORDERED, TRUNCATED, UNKNOWN_START, FORKED, DROPPED = (
    "edited",
    "deleted",
    "reordered",
    "truncated",
    "unknown_start",
    "forked",
    "dropped",
)
PROBLEM_KINDS = (EDITED, DELETED, REORDERED, TRUNCATED, UNKNOWN_START, FORKED, DROPPED)


@dataclass(frozen=True)
class Stored:
    """A message read back from the stream: its JetStream sequence, subject and payload."""

    stream_seq: int
    subject: str
    data: bytes | Mapping


@dataclass(frozen=True)
class Problem:
    kind: str
    instance: str
    seq: int
    detail: str


@dataclass(frozen=True)
class _Link:
    seq: int
    prev_hash: str
    hash: str
    stream_seq: int
    prev_stream_seq: int


_SHAPE = {"service": str, "instance": str, "seq": int, "prev_hash": str, "hash": str, "prev_stream_seq": int}


def decode_record(data: bytes | Mapping) -> dict | None:
    """The record, or None when the payload is not one (not JSON, or a link field missing)."""
    try:
        rec = dict(data) if isinstance(data, Mapping) else json.loads(data)
    except (ValueError, TypeError):
        return None
    if not isinstance(rec, dict):
        return None
    for name, kind in _SHAPE.items():
        if not isinstance(rec.get(name), kind) or isinstance(rec.get(name), bool):
            return None
    return rec


def verify(records: Iterable[Stored], anchors: Iterable[Anchor] = (), first_stream_seq: int = 1) -> list[Problem]:
    """Every problem of the log, sorted by chain and seq; [] for an intact log. `records` in stream
    order; `first_stream_seq` is the stream's first sequence (records below it expired through
    max_age, which is not tampering)."""
    verifier = Verifier()
    for stored in records:
        verifier.add(stored)
    return verifier.finish(anchors, first_stream_seq)


class Verifier:
    """`verify` one record at a time: only link fields are kept per record, not payloads."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.chains: dict[str, list[_Link]] = {}
        self.records = 0
        self._top: dict[str, int] = {}

    def add(self, stored: Stored) -> None:
        self.records += 1
        rec = decode_record(stored.data)
        if rec is None:
            instance = stored.subject.rsplit(".", 1)[-1] if stored.subject else "?"
            self.problems.append(Problem(EDITED, instance, 0, f"stream seq {stored.stream_seq} is not an audit record"))
            return
        instance, seq = rec["instance"], rec["seq"]
        if rec["hash"] != record_hash(rec):
            self.problems.append(Problem(EDITED, instance, seq, "its hash does not match its contents"))
        elif stored.subject and stored.subject != _subject_or_none(rec["service"], instance):
            self.problems.append(Problem(EDITED, instance, seq, f"stored on {stored.subject}, not its chain's subject"))
        if rec.get("kind") == DROPPED_MARK:
            self.problems.append(Problem(DROPPED, instance, seq, f"{rec.get('count')} records dropped before it"))
        elif rec.get("kind") == FORKED_MARK:
            at = rec.get("forked_at_seq")
            old = str(rec.get("forked_instance"))
            self.problems.append(Problem(FORKED, old, at if isinstance(at, int) else 0, _forked(rec)))
        top = self._top.get(instance)
        if top is not None and seq <= top:
            self.problems.append(Problem(REORDERED, instance, seq, f"stored after seq {top} of its chain"))
        self._top[instance] = seq if top is None else max(seq, top)
        self.chains.setdefault(instance, []).append(
            _Link(seq, rec["prev_hash"], rec["hash"], stored.stream_seq, rec["prev_stream_seq"])
        )

    def finish(self, anchors: Iterable[Anchor] = (), first_stream_seq: int = 1) -> list[Problem]:
        problems = list(self.problems)
        for instance, links in self.chains.items():
            ordered = sorted(links, key=lambda x: (x.seq, x.stream_seq))
            problems.extend(_check_links(instance, ordered, first_stream_seq))
        for anchor in anchors:
            problems.extend(_check_anchor(anchor, self.chains.get(anchor.instance, []), first_stream_seq))
        return sorted(problems, key=lambda p: (p.instance, p.seq, p.kind, p.detail))


def _subject_or_none(service: str, instance: str) -> str | None:
    try:
        return audit_subject(service, instance)
    except InvalidArgument:  # a token that can never be a subject: the record cannot be where it claims
        return None


def _forked(rec: Mapping) -> str:
    return (
        f"another writer appended to chain {rec.get('forked_instance')} after seq {rec.get('forked_at_seq')}; "
        f"its process continued as chain {rec.get('instance')}"
    )


def _check_links(instance: str, links: list[_Link], first_stream_seq: int) -> list[Problem]:
    out: list[Problem] = []
    first = links[0]
    genesis = first.seq == 1 and first.prev_hash == GENESIS and first.prev_stream_seq == 0
    expired = 0 < first.prev_stream_seq < first_stream_seq  # its predecessor aged out
    if not genesis and not expired:
        out.append(Problem(UNKNOWN_START, instance, first.seq, "the chain does not start at its first record"))
    for a, b in pairwise(links):
        if b.seq == a.seq:
            out.append(Problem(REORDERED, instance, b.seq, "the seq appears more than once"))
        elif b.seq > a.seq + 1:
            out.append(Problem(DELETED, instance, a.seq + 1, f"seq {a.seq + 1}..{b.seq - 1} missing"))
        elif b.prev_hash != a.hash:
            out.append(Problem(DELETED, instance, b.seq, f"prev_hash does not match seq {a.seq}'s hash"))
    return out


def _check_anchor(anchor: Anchor, links: list[_Link], first_stream_seq: int) -> list[Problem]:
    if not links:
        if anchor.stream_seq >= first_stream_seq:
            return [Problem(TRUNCATED, anchor.instance, anchor.seq, f"anchored at seq {anchor.seq}; no records left")]
        return []
    last = max(link.seq for link in links)
    if anchor.seq > last:
        return [Problem(TRUNCATED, anchor.instance, last + 1, f"anchored at seq {anchor.seq}; the log ends at {last}")]
    at = [link for link in links if link.seq == anchor.seq]
    if at and all(link.hash != anchor.hash for link in at):
        return [Problem(TRUNCATED, anchor.instance, anchor.seq, "the record differs from its anchor (tail rewritten)")]
    return []
