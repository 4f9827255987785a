"""Job YAML -> `mlmesh.scheduler.v1.JobSpec`: friendly forms for people, strict about everything else.

Friendly forms (everything else is proto3 JSON of JobSpec, field names in snake_case or camelCase):

    kind: command                 # or train, finetune, pipeline (JOB_KIND_* also accepted)
    workers: {count: 2, gpus: 1, cpu: "500m", memory: 16Gi}   # count defaults to 1
    command: ["python", "x.py"]   # or "python x.py", or {argv: [...], env: {...}, image, working_dir}
                                  # an argv item `file:rel/path` is relative to the job file
    retry: {max_retries: 2, initial_backoff: 10s}     # durations: 500ms, 10s, 1m30s, 2h, or seconds
    pipeline: {steps: [{name: prep, depends_on: [..], spec: {...a job spec...}}]}

Enum values may be written without their prefix and in lower case (`method: lora`). Fields ending in
`_bytes` take sizes (`80Gi`), `cpu_millis` takes CPU amounts (`2`, `500m`). Unknown keys, wrong
types and unparsable values raise `JobSpecError`, whose message names the YAML path, e.g.
`workers.memory: cannot parse "16GG" (use e.g. 16Gi, 512Mi, 1G or a number of bytes)`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import descriptor as _d
from google.protobuf import json_format

from mlmesh.api.scheduler.v1 import job_pb2

FD = _d.FieldDescriptor


class JobSpecError(ValueError):
    """A job file that cannot become a JobSpec; `str()` is one line naming the YAML path."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


# --- units ---------------------------------------------------------------------------------------

_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|Pi|k|K|M|G|T|P)?")
_MEMORY_UNITS = {
    None: 1,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
    "Pi": 1 << 50,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
}
_CPU = re.compile(r"(\d+(?:\.\d+)?)(m?)")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_memory(value: Any) -> int:
    """Bytes from `16Gi`, `512Mi`, `1G`, `1.5Gi` or a plain number of bytes."""
    if _is_number(value):
        if value < 0 or value != int(value):
            raise ValueError(f"must be a whole, non-negative number of bytes, got {value}")
        return int(value)
    m = _MEMORY.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f'cannot parse "{value}" (use e.g. 16Gi, 512Mi, 1G or a number of bytes)')
    return round(float(m.group(1)) * _MEMORY_UNITS[m.group(2)])


def parse_cpu(value: Any) -> int:
    """Millicores from `4`, `0.5`, `"500m"`."""
    if _is_number(value):
        if value < 0:
            raise ValueError(f"must not be negative, got {value}")
        millis = value * 1000
    else:
        m = _CPU.fullmatch(value.strip()) if isinstance(value, str) else None
        if m is None:
            raise ValueError(f'cannot parse "{value}" (use e.g. 4, 0.5 or 500m)')
        millis = float(m.group(1)) * (1 if m.group(2) else 1000)
    if abs(millis - round(millis)) > 1e-6:
        raise ValueError(f'"{value}" is finer than a millicore')
    return round(millis)


def parse_duration(value: Any) -> float:
    """Seconds from `500ms`, `10s`, `1m30s`, `2h`, `1d` or a number of seconds."""
    if _is_number(value):
        if value < 0:
            raise ValueError(f"must not be negative, got {value}")
        return float(value)
    text = value.strip() if isinstance(value, str) else ""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f'cannot parse duration "{value}" (use e.g. 500ms, 10s, 1m30s, 2h)')
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def _duration_json(seconds: float) -> str:
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


# --- the walker ----------------------------------------------------------------------------------

_INT_TYPES = {FD.TYPE_INT32, FD.TYPE_INT64, FD.TYPE_UINT32, FD.TYPE_UINT64, FD.TYPE_SINT32, FD.TYPE_SINT64}
_INT_TYPES |= {FD.TYPE_FIXED32, FD.TYPE_FIXED64, FD.TYPE_SFIXED32, FD.TYPE_SFIXED64}
_FLOAT_TYPES = {FD.TYPE_FLOAT, FD.TYPE_DOUBLE}
_PASS_THROUGH = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}
_JOB_SPEC = job_pb2.JobSpec.DESCRIPTOR.full_name
_WORKER_KEYS = ("count", "gpus", "cpu", "memory")
_COMMAND_KEYS = ("argv", "env", "image", "working_dir")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _unknown_key(key: str, known: list[str], path: str) -> JobSpecError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f'did you mean "{close[0]}"?' if close else "expected one of " + ", ".join(known)
    return JobSpecError(_join(path, key), f"unknown field; {hint}")


def _require_mapping(value: Any, path: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise JobSpecError(path, f"expected a mapping, got {_type_name(value)}")
    return value


def _field(desc: _d.Descriptor, key: Any, path: str) -> FD:
    if not isinstance(key, str):
        raise JobSpecError(_join(path, str(key)), "field names are strings")
    field = desc.fields_by_name.get(key) or desc.fields_by_camelcase_name.get(key)
    if field is None:
        raise _unknown_key(key, [f.name for f in desc.fields], path)
    return field


def _message(value: Any, desc: _d.Descriptor, path: str) -> Any:
    """A YAML value -> proto3 JSON for a message of type `desc`."""
    full = desc.full_name
    if full == "google.protobuf.Duration":
        try:
            return _duration_json(parse_duration(value))
        except ValueError as exc:
            raise JobSpecError(path, str(exc)) from None
    if full == "google.protobuf.Timestamp":
        if isinstance(value, dt.datetime):
            value = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
            return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
        if not isinstance(value, str):
            raise JobSpecError(path, f"expected an RFC 3339 time, got {_type_name(value)}")
        return value
    if full in _PASS_THROUGH:
        return value
    if full == "google.protobuf.FieldMask":
        if not isinstance(value, str):
            raise JobSpecError(path, f"expected a comma-separated list of paths, got {_type_name(value)}")
        return value
    data = dict(_require_mapping(value if value is not None else {}, path))
    if full == _JOB_SPEC:
        data = _friendly_job_spec(data, path)
    out: dict[str, Any] = {}
    for key, item in data.items():
        field = _field(desc, key, path)
        if field.name in out:
            raise JobSpecError(_join(path, field.name), "given twice (snake_case and camelCase)")
        out[field.name] = _value(item, field, _join(path, field.name))
    return out


def _is_map(field: FD) -> bool:
    return field.type == FD.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def _value(value: Any, field: FD, path: str) -> Any:
    if _is_map(field):
        entry = field.message_type
        value_field = entry.fields_by_name["value"]
        data = _require_mapping(value if value is not None else {}, path)
        out = {}
        for k, v in data.items():
            if isinstance(k, bool) or not isinstance(k, str | int):
                raise JobSpecError(f"{path}.{k}", "keys must be strings")
            out[str(k)] = _scalar_or_message(v, value_field, f"{path}.{k}", stringify=True)
        return out
    if field.is_repeated:
        items = value if isinstance(value, list) else [value]
        if value is None:
            items = []
        return [_scalar_or_message(v, field, f"{path}[{i}]") for i, v in enumerate(items)]
    return _scalar_or_message(value, field, path)


def _scalar_or_message(value: Any, field: FD, path: str, stringify: bool = False) -> Any:
    t = field.type
    if t == FD.TYPE_MESSAGE:
        return _message(value, field.message_type, path)
    if t == FD.TYPE_ENUM:
        return _enum(value, field.enum_type, path)
    if t == FD.TYPE_BOOL:
        if not isinstance(value, bool):
            raise JobSpecError(path, f"expected true or false, got {_type_name(value)}")
        return value
    if t in _INT_TYPES:
        try:
            if isinstance(value, str) and field.name.endswith("_bytes"):
                return parse_memory(value)
            if isinstance(value, str) and field.name == "cpu_millis":
                return parse_cpu(value)
        except ValueError as exc:
            raise JobSpecError(path, str(exc)) from None
        if not isinstance(value, int) or isinstance(value, bool):
            raise JobSpecError(path, f"expected a whole number, got {_type_name(value)}")
        return value
    if t in _FLOAT_TYPES:
        if not _is_number(value):
            raise JobSpecError(path, f"expected a number, got {_type_name(value)}")
        return float(value)
    # string / bytes
    if isinstance(value, str):
        return value
    if stringify and (_is_number(value) or isinstance(value, bool)):
        return str(value).lower() if isinstance(value, bool) else str(value)
    raise JobSpecError(path, f"expected a string, got {_type_name(value)}")


def _enum(value: Any, enum: _d.EnumDescriptor, path: str) -> str:
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
    names = [v.name for v in enum.values if v.number != 0]
    if isinstance(value, str):
        wanted = value.strip().upper().replace("-", "_")
        for candidate in (wanted, prefix + wanted):
            if candidate in names:
                return candidate
    short = ", ".join(n.removeprefix(prefix).lower() for n in names)
    shown = f'"{value}"' if isinstance(value, str) else _type_name(value)
    raise JobSpecError(path, f"unknown value {shown}; expected one of {short}")


# --- friendly JobSpec forms ----------------------------------------------------------------------


def _friendly_job_spec(data: dict, path: str) -> dict:
    if "workers" in data:
        data["workers"] = _friendly_workers(data["workers"], _join(path, "workers"))
    if "command" in data:
        data["command"] = _friendly_command(data["command"], _join(path, "command"))
    return data


def _friendly_workers(value: Any, path: str) -> Any:
    data = _require_mapping(value, path)
    if "resources" in data:  # the proto form: {count, resources: {gpus, cpu_millis, memory_bytes}}
        return value
    for key in data:
        if key not in _WORKER_KEYS:
            raise _unknown_key(str(key), list(_WORKER_KEYS), path)
    out: dict[str, Any] = {"count": data.get("count", 1)}  # type-checked by the walker
    res: dict[str, Any] = {}
    if "gpus" in data:
        res["gpus"] = data["gpus"]
    for key, target, parse in (("cpu", "cpu_millis", parse_cpu), ("memory", "memory_bytes", parse_memory)):
        if key in data:
            try:
                res[target] = parse(data[key])
            except ValueError as exc:
                raise JobSpecError(_join(path, key), str(exc)) from None
    if res:
        out["resources"] = res
    return out


def _friendly_command(value: Any, path: str) -> Any:
    if isinstance(value, str):
        try:
            return {"command": shlex.split(value)}
        except ValueError as exc:
            raise JobSpecError(path, f"cannot split the command line: {exc}") from None
    if isinstance(value, list):
        return {"command": _argv(value, path)}
    data = dict(_require_mapping(value, path))
    if "argv" in data and "command" in data:
        raise JobSpecError(_join(path, "argv"), "give either argv or command, not both")
    if "argv" in data:
        argv = data.pop("argv")
        data["command"] = _argv(argv if isinstance(argv, list) else [argv], _join(path, "argv"))
    elif "command" in data and isinstance(data["command"], list):
        data["command"] = _argv(data["command"], _join(path, "command"))
    return data


def _argv(items: list, path: str) -> list[str]:
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            out.append(item)
        elif _is_number(item):
            out.append(str(item))
        else:
            raise JobSpecError(f"{path}[{i}]", f"expected a string, got {_type_name(item)}")
    return out


# --- entry points --------------------------------------------------------------------------------


def job_spec_from_dict(data: Any) -> job_pb2.JobSpec:
    """A parsed YAML document -> JobSpec; `JobSpecError` names the path of the first problem."""
    if not isinstance(data, Mapping):
        raise JobSpecError("", f"a job file is a mapping of JobSpec fields, got {_type_name(data)}")
    normalized = _message(data, job_pb2.JobSpec.DESCRIPTOR, "")
    try:
        return json_format.ParseDict(normalized, job_pb2.JobSpec())
    except json_format.ParseError as exc:  # the walker should catch everything; keep it one line
        text = str(exc).splitlines()[0]
        where = re.search(r' at "?JobSpec\.?([\w.\[\]]*)"?\.?$', text)
        path = where.group(1) if where else ""
        text = re.sub(r"^(Failed to parse \w+ field: )+", "", text[: where.start()] if where else text)
        raise JobSpecError(path, text) from None


def load_job_spec(path: str | Path) -> job_pb2.JobSpec:
    """Read a job YAML file. Raises `JobSpecError` (one line) for unreadable, malformed or invalid files."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise JobSpecError("", f"cannot read {path}: {exc.strerror or exc}") from None
    spec = parse_job_yaml(text, source=str(path))
    resolve_local_files(spec, path.resolve().parent)
    return spec


def resolve_local_files(spec: job_pb2.JobSpec, base: Path) -> None:
    """`file:relative/path` in a trainer's model or dataset is relative to the job file, so an
    example runs from any directory; it becomes `file:///absolute/path`. In a command's argv it
    becomes the plain absolute path. Pipeline steps too."""
    for name in ("model", "dataset"):
        ref = getattr(spec.trainer, name)
        if ref.startswith("file:") and not ref.startswith("file:///"):
            rel = ref.removeprefix("file:").removeprefix("//")
            setattr(spec.trainer, name, f"file://{(base / rel).resolve()}")
    argv = spec.command.command
    for i, arg in enumerate(argv):
        if arg.startswith("file:"):
            rel = arg.removeprefix("file:").removeprefix("//")
            argv[i] = str(Path(rel) if rel.startswith("/") else (base / rel).resolve())
    for step in spec.pipeline.steps:
        resolve_local_files(step.spec, base)


def parse_job_yaml(text: str, source: str = "<job>") -> job_pb2.JobSpec:
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise JobSpecError("", f"{source} is not valid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise JobSpecError("", f"{source} is not valid YAML: {exc}") from None
    if data is None:
        raise JobSpecError("", f"{source} is empty")
    return job_spec_from_dict(data)
