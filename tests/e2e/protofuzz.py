"""Hypothesis strategies for any protobuf message, from its descriptor alone: random and hostile
field values (huge and odd strings, random bytes, integer edges, NaN, enum numbers no one
declared), nested messages, and deep chains where a message type contains itself.
"""

from __future__ import annotations

import os

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import strategies as st

HUGE = 1 << 20
# Strings that have broken parsers and path handling elsewhere, next to random text.
ODD_STRINGS = [
    "",
    " ",
    "a" * HUGE,
    "../../../../etc/passwd",
    "/",
    "\x00",
    "\ud7ff\U0010ffff",
    "💥" * 64,
    "a--b",
    "*",
    "%s%n%x",
    "-1",
    "9" * 40,
    "model://x@1",
    "artifact://../x",
    "builtin:minilm",
    "file:///proc/self/environ",
    "A" * 64,
    "null",
]
ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-_"
# Below protobuf's parse depth of 100: deeper messages are refused by the library, not the service.
MAX_CHAIN = 60
MAX_DEPTH = 3  # of random nesting; deep_chain goes deeper on purpose

T = FieldDescriptor
_INT_RANGES = {
    T.TYPE_INT32: (-(2**31), 2**31 - 1),
    T.TYPE_SINT32: (-(2**31), 2**31 - 1),
    T.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    T.TYPE_INT64: (-(2**63), 2**63 - 1),
    T.TYPE_SINT64: (-(2**63), 2**63 - 1),
    T.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    T.TYPE_UINT32: (0, 2**32 - 1),
    T.TYPE_FIXED32: (0, 2**32 - 1),
    T.TYPE_UINT64: (0, 2**64 - 1),
    T.TYPE_FIXED64: (0, 2**64 - 1),
}


def _ints(lo: int, hi: int):
    edges = sorted({v for v in (0, 1, -1, lo, hi, lo + 1, hi - 1, 2**31 - 1, 2**53) if lo <= v <= hi})
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def scalar(field: FieldDescriptor):
    if field.type == T.TYPE_STRING:
        return st.one_of(
            st.sampled_from(ODD_STRINGS), st.text(max_size=40), st.text(ID_ALPHABET, min_size=1, max_size=70)
        )
    if field.type == T.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.just(os.urandom(1 << 16)))
    if field.type == T.TYPE_BOOL:
        return st.booleans()
    if field.type == T.TYPE_FLOAT:
        return st.floats(width=32)
    if field.type == T.TYPE_DOUBLE:
        return st.floats()
    if field.type == T.TYPE_ENUM:
        declared = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(declared), _ints(-(2**31), 2**31 - 1))
    return _ints(*_INT_RANGES[field.type])


def recursive_types(desc: Descriptor) -> set[str]:
    """Full names of the message types reachable from `desc` that can contain themselves."""
    found: set[str] = set()

    def reaches(start: Descriptor, target: str, seen: set[str]) -> bool:
        for f in start.fields:
            m = f.message_type
            if m is None:
                continue
            if m.full_name == target:
                return True
            if m.full_name not in seen:
                seen.add(m.full_name)
                if reaches(m, target, seen):
                    return True
        return False

    def visit(d: Descriptor, seen: set[str]) -> None:
        if d.full_name in seen:
            return
        seen.add(d.full_name)
        if reaches(d, d.full_name, set()) and not d.GetOptions().map_entry:
            found.add(d.full_name)
        for f in d.fields:
            if f.message_type is not None:
                visit(f.message_type, seen)

    visit(desc, set())
    return found


def _chain_path(desc: Descriptor, target: str, seen: frozenset = frozenset()) -> list[FieldDescriptor] | None:
    """The fields from `desc` down to the next message of type `target`."""
    for f in desc.fields:
        m = f.message_type
        if m is None or m.full_name in seen:
            continue
        if m.full_name == target:
            return [f]
        rest = _chain_path(m, target, seen | {m.full_name})
        if rest is not None:
            return [f, *rest]
    return None


def deep_chain(desc: Descriptor, target: str, depth: int):
    """A message of type `desc` whose first `target` (a type that contains itself, e.g. a job spec
    whose pipeline step is a job spec) is nested in itself `depth` times, nothing else set."""
    root = message_factory.GetMessageClass(desc)()
    node = root
    path = _chain_path(desc, target) if desc.full_name != target else []
    loop = _chain_path(message_factory.GetMessageClass(desc).DESCRIPTOR, target) if not path else None
    steps = path + (_chain_path(path[-1].message_type, target) or []) * depth if path else (loop or []) * depth
    skip = False
    for f in steps[:MAX_CHAIN]:
        if skip:  # a map entry's value field: the map lookup below already stepped into it
            skip = False
        elif f.message_type.GetOptions().map_entry:
            node, skip = getattr(node, f.name)["k"], True
        elif f.is_repeated:
            node = getattr(node, f.name).add()
        else:
            node = getattr(node, f.name)
            node.SetInParent()
    return root


TIME_TYPES = ("google.protobuf.Duration", "google.protobuf.Timestamp")


def times(desc: Descriptor):
    """Durations and timestamps at and past protobuf's range edges, and plain ones."""
    seconds = st.one_of(
        st.sampled_from([0, 1, -1, 60, 315_576_000_000, 315_576_000_001, 253_402_300_800, 2**63 - 1, -(2**63)]),
        st.integers(-(2**63), 2**63 - 1),
    )
    nanos = st.one_of(st.sampled_from([0, 1, -1, 999_999_999, 10**9, -(2**31)]), st.integers(-(2**31), 2**31 - 1))
    cls = message_factory.GetMessageClass(desc)
    return st.builds(lambda s, n: cls(seconds=s, nanos=n), seconds, nanos)


@st.composite
def message(draw, desc: Descriptor, depth: int = 0):
    cls = message_factory.GetMessageClass(desc)
    msg = cls()
    for f in desc.fields:
        if not draw(st.booleans()):
            continue  # unset: the default
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            key_f, value_f = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            values = value_f.message_type
            entries = draw(
                st.dictionaries(
                    scalar(key_f),
                    message(values, depth + 1) if values is not None else scalar(value_f),
                    max_size=3,
                )
            )
            target = getattr(msg, f.name)
            for k, v in entries.items():
                if values is not None:
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
            continue
        if f.message_type is not None:
            if depth >= MAX_DEPTH:
                continue
            is_time = f.message_type.full_name in TIME_TYPES
            inner = times(f.message_type) if is_time else message(f.message_type, depth + 1)
            if f.is_repeated:
                getattr(msg, f.name).extend(draw(st.lists(inner, max_size=3)))
            else:
                getattr(msg, f.name).CopyFrom(draw(inner))
            continue
        if f.is_repeated:
            getattr(msg, f.name).extend(draw(st.lists(scalar(f), max_size=3)))
        else:
            setattr(msg, f.name, draw(scalar(f)))
    return msg


def requests(desc: Descriptor):
    """Random requests of type `desc`; where a type in it contains itself, also deeply nested ones."""
    nested = sorted(recursive_types(desc))
    if not nested:
        return message(desc)
    chains = st.tuples(st.sampled_from(nested), st.integers(2, MAX_CHAIN)).map(lambda t: deep_chain(desc, *t))
    return st.one_of(message(desc), chains)
