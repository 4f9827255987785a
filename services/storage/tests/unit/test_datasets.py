"""Dataset inspection on real small files: jsonl (pure Python) and parquet (written with pyarrow)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlmesh.api.storage.v1 import artifact_pb2
from mlmesh.common.errors import InvalidArgument, NotFound
from mlmesh.storage import datasets

pytestmark = pytest.mark.timeout(30)


def columns(info: artifact_pb2.DatasetInfo) -> dict[str, tuple[str, bool]]:
    return {c.name: (c.type, c.nullable) for c in info.columns}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_schema_types_nullability_and_order(tmp_path: Path):
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"text": "hi", "label": 1, "score": 0.5, "ok": True, "tags": ["a"], "meta": {"k": 1}},
            {"text": "yo", "label": 0, "score": 1, "ok": False, "tags": [], "meta": None, "extra": 3},
            {"text": "hey", "label": 2, "score": 2.5, "ok": True, "tags": ["b", "c"], "meta": {}},
        ],
    )
    info = datasets.inspect_path(path)
    assert info.format == artifact_pb2.DATASET_FORMAT_JSONL
    assert info.row_count == 3
    assert [c.name for c in info.columns] == ["text", "label", "score", "ok", "tags", "meta", "extra"]
    assert columns(info) == {
        "text": ("string", False),
        "label": ("int", False),
        "score": ("float", False),  # int and float widen to float
        "ok": ("bool", False),  # not int, although bool is an int in Python
        "tags": ("list<string>", False),
        "meta": ("object", True),  # null in one row
        "extra": ("int", True),  # missing from two rows
    }


def test_jsonl_mixed_and_all_null_columns_and_blank_lines(tmp_path: Path):
    path = tmp_path / "d.json"
    path.write_text('{"a": 1, "b": null}\n\n   \n{"a": "x", "b": null}\n')
    info = datasets.inspect_path(path)
    assert info.row_count == 2  # blank lines are not rows
    assert columns(info) == {"a": ("int|string", False), "b": ("null", True)}


def test_jsonl_invalid_line_is_named(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3,,}\n{"a": 4}\n')
    with pytest.raises(InvalidArgument) as err:
        datasets.inspect_jsonl(path)
    assert "line 3" in err.value.message
    assert [v.field for v in err.value.violations] == ["dataset"]
    assert "line 3" in err.value.violations[0].description


def test_jsonl_non_object_and_non_utf8_lines_are_named(tmp_path: Path):
    path = tmp_path / "arr.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(InvalidArgument, match="line 2: expected a JSON object"):
        datasets.inspect_jsonl(path)
    path.write_bytes(b'{"a": 1}\n{"a": "\xff\xfe"}\n')
    with pytest.raises(InvalidArgument, match="line 2"):
        datasets.inspect_jsonl(path)


def test_jsonl_empty_file(tmp_path: Path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    info = datasets.inspect_path(path)
    assert info.row_count == 0 and len(info.columns) == 0


def test_parquet_schema_row_count_and_nullability_from_statistics(tmp_path: Path):
    table = pa.table(
        {
            "text": pa.array(["a", "b", None, "d"], pa.string()),
            "label": pa.array([0, 1, 1, 0], pa.int64()),
            "score": pa.array([0.1, 0.2, 0.3, 0.4], pa.float32()),
            "emb": pa.array([[1.0], [2.0, 3.0], [], [4.0]], pa.list_(pa.float32())),
        }
    )
    path = tmp_path / "train.parquet"
    pq.write_table(table, path, row_group_size=2)  # two row groups: counts and nulls are summed
    info = datasets.inspect_path(path)
    assert info.format == artifact_pb2.DATASET_FORMAT_PARQUET
    assert info.row_count == 4
    assert [c.name for c in info.columns] == ["text", "label", "score", "emb"]
    assert columns(info) == {
        "text": ("string", True),  # a null in the second row group
        "label": ("int64", False),  # nullable in the schema, but no nulls occur
        "score": ("float", False),
        "emb": ("list<float>", True),  # nested: no top-level statistics, so the schema decides
    }


def test_parquet_without_statistics_falls_back_to_schema(tmp_path: Path):
    schema = pa.schema([pa.field("id", pa.int32(), nullable=False), pa.field("name", pa.string())])
    path = tmp_path / "nostats.pq"
    pq.write_table(pa.table({"id": [1, 2], "name": ["x", "y"]}, schema=schema), path, write_statistics=False)
    info = datasets.inspect_path(path)
    assert info.row_count == 2
    assert columns(info) == {"id": ("int32", False), "name": ("string", True)}


def test_corrupt_parquet_is_invalid_argument(tmp_path: Path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InvalidArgument) as err:
        datasets.inspect_path(path)
    assert err.value.violations[0].field == "dataset"


def test_unknown_extension_and_missing_file(tmp_path: Path):
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(InvalidArgument, match=r"unknown dataset file type '\.csv'"):
        datasets.inspect_path(path)
    with pytest.raises(InvalidArgument):
        datasets.inspect_path(tmp_path / "noext")
    with pytest.raises(NotFound):
        datasets.inspect_path(tmp_path / "missing.jsonl")
    with pytest.raises(NotFound):
        datasets.inspect_path(tmp_path / "missing.parquet")


def test_merge_of_splits(tmp_path: Path):
    train = datasets.inspect_path(write_jsonl(tmp_path / "train.jsonl", [{"x": 1, "y": "a"}, {"x": 2, "y": "b"}]))
    test = datasets.inspect_path(write_jsonl(tmp_path / "test.jsonl", [{"x": 1.5}]))
    merged = datasets.merge([train, test])
    assert merged.row_count == 3
    assert columns(merged) == {"x": ("float", False), "y": ("string", True)}
    parquet = tmp_path / "p.parquet"
    pq.write_table(pa.table({"x": [1]}), parquet)
    with pytest.raises(InvalidArgument, match="same format"):
        datasets.merge([train, datasets.inspect_path(parquet)])
