"""Dataset inspection: the schema and row count of a jsonl or parquet file, as `DatasetInfo`.

Storage records this on a dataset artifact at commit, so trainers and the CLI can see the columns
without downloading the data.

- jsonl: streamed line by line in pure Python (memory is bounded by the longest line and the
  number of columns, never by the file). Columns are the union of the keys, in first-seen order;
  types are inferred from the values (string, int, float, bool, list<...>, object, null); a column
  is nullable when some row lacks the key or holds null. A line that is not a JSON object fails with
  INVALID_ARGUMENT naming its line number.
- parquet: pyarrow reads only the footer: the Arrow schema, the row count from the metadata, and
  the column-chunk statistics' null counts for `nullable` (falling back to the schema's
  nullability where a writer left no statistics). No data page is read.

Everything here is blocking file I/O: async callers run it in `asyncio.to_thread`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from mlmesh.api.storage.v1 import artifact_pb2
from mlmesh.common.errors import InvalidArgument, NotFound

JSONL = artifact_pb2.DATASET_FORMAT_JSONL
PARQUET = artifact_pb2.DATASET_FORMAT_PARQUET

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")

MAX_LINE_BYTES = 64 << 20  # one jsonl record
MAX_COLUMNS = 10_000
MAX_COLUMN_NAME = 1024

# Order in which mixed types are written, e.g. "int|string".
_TYPE_ORDER = ("null", "bool", "int", "float", "string", "list", "object")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int in Python
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def _merge_name(types: set[str]) -> str:
    """One type name for a set of observed non-null types: int and float widen to float; anything
    else mixed is written as an alternation."""
    if not types:
        return "null"
    if types == {"int", "float"}:
        return "float"
    return "|".join(sorted(types, key=lambda t: (_TYPE_ORDER.index(t) if t in _TYPE_ORDER else 99, t)))


class _Column:
    __slots__ = ("elements", "name", "nulls", "seen", "types")

    def __init__(self, name: str):
        self.name = name
        self.types: set[str] = set()  # non-null value types
        self.elements: set[str] = set()  # non-null element types of list values
        self.seen = 0  # rows that have the key
        self.nulls = False

    def add(self, value: object) -> None:
        self.seen += 1
        kind = _json_type(value)
        if kind == "null":
            self.nulls = True
            return
        self.types.add(kind)
        if kind == "list":
            self.elements.update(t for t in map(_json_type, value) if t != "null")

    def type_name(self) -> str:
        if self.types == {"list"}:
            return f"list<{_merge_name(self.elements)}>" if self.elements else "list"
        return _merge_name(self.types)


def _lines(path: Path) -> Iterable[tuple[int, bytes]]:
    with path.open("rb") as f:
        number = 0
        while True:
            line = f.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            number += 1
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                raise InvalidArgument.field("dataset", f"line {number}: longer than {MAX_LINE_BYTES} bytes")
            yield number, line


def inspect_jsonl(path: str | Path) -> artifact_pb2.DatasetInfo:
    """Schema and row count of a JSON-lines file; blank lines are skipped, not counted."""
    path = Path(path)
    columns: dict[str, _Column] = {}
    rows = 0
    try:
        for number, line in _lines(path):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
                raise InvalidArgument.field("dataset", f"line {number}: invalid JSON ({reason})") from None
            if not isinstance(record, dict):
                raise InvalidArgument.field(
                    "dataset", f"line {number}: expected a JSON object, got {_json_type(record)}"
                )
            rows += 1
            for key, value in record.items():
                col = columns.get(key)
                if col is None:
                    if len(columns) >= MAX_COLUMNS:
                        raise InvalidArgument.field("dataset", f"line {number}: more than {MAX_COLUMNS} columns")
                    if len(key) > MAX_COLUMN_NAME:
                        raise InvalidArgument.field(
                            "dataset", f"line {number}: a key is longer than {MAX_COLUMN_NAME} characters"
                        )
                    col = columns[key] = _Column(key)
                col.add(value)
    except FileNotFoundError:
        raise NotFound(f"dataset file {path.name} not found") from None
    info = artifact_pb2.DatasetInfo(format=JSONL, row_count=rows)
    for col in columns.values():
        info.columns.add(name=col.name, type=col.type_name(), nullable=col.nulls or col.seen < rows)
    return info


def _arrow_type_name(t) -> str:
    import pyarrow as pa

    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return f"list<{_arrow_type_name(t.value_type)}>"
    if pa.types.is_map(t):
        return f"map<{_arrow_type_name(t.key_type)}, {_arrow_type_name(t.item_type)}>"
    if pa.types.is_struct(t):
        return (
            "struct<"
            + ", ".join(f"{t.field(i).name}: {_arrow_type_name(t.field(i).type)}" for i in range(t.num_fields))
            + ">"
        )
    return str(t)


def inspect_parquet(path: str | Path) -> artifact_pb2.DatasetInfo:
    """Schema and row count of a parquet file, from its footer alone."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        pf = pq.ParquetFile(path)
    except FileNotFoundError:
        raise NotFound(f"dataset file {path.name} not found") from None
    except (pa.ArrowException, OSError) as exc:
        raise InvalidArgument.field("dataset", f"not a readable parquet file ({type(exc).__name__})") from None
    meta = pf.metadata
    schema = pf.schema_arrow
    if len(schema) > MAX_COLUMNS:
        raise InvalidArgument.field("dataset", f"more than {MAX_COLUMNS} columns")
    # Null counts of top-level primitive columns (leaf path == the field name), summed over row
    # groups; None where any row group has no statistics.
    nulls: dict[str, int | None] = {}
    for rg in range(meta.num_row_groups):
        group = meta.row_group(rg)
        for ci in range(group.num_columns):
            chunk = group.column(ci)
            key = chunk.path_in_schema
            stats = chunk.statistics
            count = stats.null_count if stats is not None and stats.has_null_count else None
            if key in nulls and nulls[key] is None:
                continue
            nulls[key] = None if count is None else (nulls.get(key) or 0) + count
    info = artifact_pb2.DatasetInfo(format=PARQUET, row_count=meta.num_rows)
    for field in schema:
        count = nulls.get(field.name)
        nullable = field.nullable if count is None else count > 0
        info.columns.add(name=field.name, type=_arrow_type_name(field.type), nullable=nullable)
    return info


def format_of(path: str | Path) -> int:
    """The dataset format a file name implies; INVALID_ARGUMENT for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return JSONL
    if suffix in PARQUET_SUFFIXES:
        return PARQUET
    known = ", ".join(JSONL_SUFFIXES + PARQUET_SUFFIXES)
    raise InvalidArgument.field("dataset", f"unknown dataset file type {suffix or '(none)'!r}; expected one of {known}")


def inspect_path(path: str | Path) -> artifact_pb2.DatasetInfo:
    """Inspect one file, choosing the reader by its extension (.jsonl/.json/.ndjson, .parquet/.pq)."""
    return inspect_jsonl(path) if format_of(path) == JSONL else inspect_parquet(path)


def merge(infos: Iterable[artifact_pb2.DatasetInfo]) -> artifact_pb2.DatasetInfo:
    """One DatasetInfo for a dataset of several files (e.g. splits): rows are summed, columns are
    the union in first-seen order; a column absent from some file, or nullable in one, is nullable;
    differing types are joined like jsonl's mixed types. All files must share one format."""
    infos = list(infos)
    out = artifact_pb2.DatasetInfo()
    if not infos:
        return out
    formats = {i.format for i in infos}
    if len(formats) != 1:
        raise InvalidArgument.field("dataset", "all files of a dataset must have the same format")
    out.format = formats.pop()
    order: dict[str, tuple[set[str], bool, int]] = {}
    for info in infos:
        out.row_count += info.row_count
        for col in info.columns:
            types, nullable, present = order.get(col.name, (set(), False, 0))
            types = types | {col.type}
            order[col.name] = (types, nullable or col.nullable, present + 1)
    for name, (types, nullable, present) in order.items():
        type_name = next(iter(types)) if len(types) == 1 else _merge_name({t for t in types if t != "null"})
        out.columns.add(name=name, type=type_name, nullable=nullable or present < len(infos))
    return out
