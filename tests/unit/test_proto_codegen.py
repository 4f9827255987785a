"""The committed generated API code matches proto/, imports, and speaks proto3 JSON."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

REPO = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto"
API_DIR = REPO / "libs" / "common" / "src" / "mlmesh" / "api"
GEN = REPO / "tools" / "gen_proto.py"
AREAS = ["common", "events", "fabric", "gateway", "scheduler", "storage", "telemetry", "trainer"]


def _proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "mlmesh").rglob("*.proto"))


def _module_name(proto: Path) -> str:
    """mlmesh/<area>/v1/x.proto -> mlmesh.api.<area>.v1.x_pb2"""
    rel = proto.relative_to(PROTO_ROOT).with_suffix("")
    parts = rel.parts
    return ".".join(["mlmesh", "api", *parts[1:-1], f"{parts[-1]}_pb2"])


def _run_gen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(GEN), *args], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.timeout(60)
def test_committed_generated_code_is_current():
    result = _run_gen("--check")
    assert result.returncode == 0, "generated code is stale; run `make proto`\n" + result.stdout + result.stderr


@pytest.mark.timeout(60)
def test_check_reports_every_kind_of_staleness(tmp_path):
    stale = tmp_path / "api"
    shutil.copytree(API_DIR, stale, ignore=shutil.ignore_patterns("__pycache__"))
    changed = stale / "scheduler" / "v1" / "job_pb2.py"
    changed.write_text(changed.read_text() + "# edited by hand\n")
    (stale / "fabric" / "v1" / "node_pb2.pyi").unlink()
    (stale / "storage" / "v1" / "leftover_pb2.py").write_text("")

    result = _run_gen("--check", "--api-dir", str(stale))

    assert result.returncode == 1
    assert "differs: scheduler/v1/job_pb2.py" in result.stderr
    assert "missing: fabric/v1/node_pb2.pyi" in result.stderr
    assert "stray (not generated from any .proto): storage/v1/leftover_pb2.py" in result.stderr


@pytest.mark.timeout(60)
def test_generation_is_deterministic_and_keeps_unowned_files(tmp_path):
    out = tmp_path / "api"
    out.mkdir()
    (out / "__init__.py").write_text("# kept\n")
    assert _run_gen("--api-dir", str(out)).returncode == 0
    first = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert _run_gen("--api-dir", str(out)).returncode == 0
    second = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert first == second
    assert (out / "__init__.py").read_text() == "# kept\n"
    assert _run_gen("--check", "--api-dir", str(out)).returncode == 0


def test_every_area_has_protos():
    found = sorted({p.relative_to(PROTO_ROOT).parts[1] for p in _proto_files()})
    assert found == AREAS


@pytest.mark.timeout(60)
@pytest.mark.parametrize("proto", _proto_files(), ids=lambda p: p.relative_to(PROTO_ROOT).as_posix())
def test_generated_module_imports_with_its_services(proto: Path):
    area = proto.relative_to(PROTO_ROOT).parts[1]
    mod = importlib.import_module(_module_name(proto))
    # The proto package is unchanged; only the Python module moved under mlmesh.api.
    assert mod.DESCRIPTOR.package == f"mlmesh.{area}.v1"
    assert mod.DESCRIPTOR.name == proto.relative_to(PROTO_ROOT).as_posix()
    for msg in mod.DESCRIPTOR.message_types_by_name:
        assert getattr(mod, msg).__module__ == mod.__name__
    services = mod.DESCRIPTOR.services_by_name
    if services:
        grpc_mod = importlib.import_module(mod.__name__ + "_grpc")
        for name in services:
            assert callable(getattr(grpc_mod, f"{name}Stub"))
            assert isinstance(getattr(grpc_mod, f"{name}Servicer"), type)
            assert callable(getattr(grpc_mod, f"add_{name}Servicer_to_server"))


# --- proto3 JSON round trip of every message --------------------------------------------------

_SCALARS = {
    FieldDescriptor.TYPE_DOUBLE: 1.5,
    FieldDescriptor.TYPE_FLOAT: 2.5,
    FieldDescriptor.TYPE_INT64: -(2**40),
    FieldDescriptor.TYPE_UINT64: 2**63 + 7,
    FieldDescriptor.TYPE_INT32: -7,
    FieldDescriptor.TYPE_FIXED64: 2**50,
    FieldDescriptor.TYPE_FIXED32: 7,
    FieldDescriptor.TYPE_BOOL: True,
    FieldDescriptor.TYPE_STRING: "x-1_é",
    FieldDescriptor.TYPE_BYTES: b"\x00\xffbytes",
    FieldDescriptor.TYPE_UINT32: 2**31 + 3,
    FieldDescriptor.TYPE_SFIXED32: -9,
    FieldDescriptor.TYPE_SFIXED64: -(2**45),
    FieldDescriptor.TYPE_SINT32: -11,
    FieldDescriptor.TYPE_SINT64: -(2**41),
}


def _scalar(field: FieldDescriptor):
    if field.type == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values[-1].number  # a non-zero, named value
    return _SCALARS[field.type]


def _is_repeated(field: FieldDescriptor) -> bool:
    # `is_repeated` replaces the deprecated `label` in newer protobuf releases.
    flag = getattr(field, "is_repeated", None)
    return flag if flag is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _populate(msg, depth: int = 0) -> None:
    """Set every field (one member per oneof), recursing into messages up to a fixed depth."""
    desc: Descriptor = msg.DESCRIPTOR
    name = desc.full_name
    if name == "google.protobuf.Timestamp":
        msg.seconds, msg.nanos = 1_700_000_000, 123_000_000
        return
    if name == "google.protobuf.Duration":
        msg.seconds, msg.nanos = 90, 500_000_000
        return
    if name == "google.protobuf.Struct":
        msg.update({"stage": 2, "nested": {"flag": True}, "list": ["a", 1.5]})
        return
    if name == "google.protobuf.FieldMask":
        msg.paths.extend(["nominal_quota.gpus", "canary"])
        return
    if depth > 3:
        return
    seen_oneofs = set()
    for field in desc.fields:
        oneof = field.containing_oneof  # also the synthetic oneof of a proto3 `optional`
        if oneof is not None:
            if oneof.name in seen_oneofs:
                continue
            seen_oneofs.add(oneof.name)
        value = getattr(msg, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            val_field = field.message_type.fields_by_name["value"]
            key = "k" if field.message_type.fields_by_name["key"].type == FieldDescriptor.TYPE_STRING else 1
            if val_field.message_type is not None:
                _populate(value[key], depth + 1)
            else:
                value[key] = _scalar(val_field)
        elif _is_repeated(field):
            if field.message_type is not None:
                _populate(value.add(), depth + 1)
            else:
                value.append(_scalar(field))
        elif field.message_type is not None:
            getattr(msg, field.name).SetInParent()
            _populate(getattr(msg, field.name), depth + 1)
        else:
            setattr(msg, field.name, _scalar(field))


def _all_messages(area: str):
    for proto in _proto_files():
        if proto.relative_to(PROTO_ROOT).parts[1] != area:
            continue
        mod = importlib.import_module(_module_name(proto))
        stack = [getattr(mod, n) for n in mod.DESCRIPTOR.message_types_by_name]
        while stack:
            cls = stack.pop()
            if not cls.DESCRIPTOR.GetOptions().map_entry:
                yield cls
            stack.extend(getattr(cls, n.name) for n in cls.DESCRIPTOR.nested_types)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("area", AREAS)
def test_every_message_round_trips_through_proto3_json(area: str):
    classes = list(_all_messages(area))
    assert classes, f"no messages in area {area}"
    for cls in classes:
        msg = cls()
        _populate(msg)
        text = json_format.MessageToJson(msg)
        back = json_format.Parse(text, cls())
        assert back == msg, f"{cls.DESCRIPTOR.full_name} changed in a JSON round trip"
        assert cls.FromString(msg.SerializeToString()) == msg


@pytest.mark.timeout(60)
def test_event_payload_json_is_readable_and_decodes():
    from mlmesh.api.events.v1 import events_pb2
    from mlmesh.api.scheduler.v1 import job_pb2

    event = events_pb2.JobStateChanged(
        job_id="job-1",
        team="team-a",
        from_state=job_pb2.JOB_STATE_PENDING,
        to_state=job_pb2.JOB_STATE_ADMITTED,
        reason="Admitted",
        attempt=1,
        revision=42,
    )
    text = json_format.MessageToJson(event)
    # proto3 JSON: lowerCamelCase names, enum names, 64-bit integers as strings.
    assert '"fromState": "JOB_STATE_PENDING"' in text
    assert '"toState": "JOB_STATE_ADMITTED"' in text
    assert '"revision": "42"' in text
    assert json_format.Parse(text, events_pb2.JobStateChanged()) == event
    # Readers written against snake_case names are accepted too.
    snake = '{"job_id": "job-1", "to_state": "JOB_STATE_RUNNING", "attempt": 2}'
    parsed = json_format.Parse(snake, events_pb2.JobStateChanged())
    assert parsed.to_state == job_pb2.JOB_STATE_RUNNING and parsed.attempt == 2


@pytest.mark.timeout(60)
def test_plan_overrides_keep_explicit_zero_values():
    from mlmesh.api.scheduler.v1 import job_pb2

    spec = job_pb2.JobSpec(kind=job_pb2.JOB_KIND_FINETUNE)
    spec.trainer.overrides.zero_stage = 0
    spec.trainer.overrides.torch_compile = False
    back = json_format.Parse(json_format.MessageToJson(spec), job_pb2.JobSpec())
    assert back.trainer.overrides.HasField("zero_stage")
    assert back.trainer.overrides.HasField("torch_compile")
    assert not back.trainer.overrides.HasField("micro_batch_size")
