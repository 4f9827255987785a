"""The filesystem tier: atomic puts, verified full and range reads, corruption detection."""

from __future__ import annotations

import hashlib
import os

import pytest

from mlmesh.api.storage.v1 import artifact_pb2
from mlmesh.common.errors import DataLoss
from mlmesh.storage.blobstore import FsTier, hash_file

pytestmark = pytest.mark.timeout(60)
CS = 64 << 10  # small chunks so a few hundred KiB span many


@pytest.fixture
def tier(tmp_path) -> FsTier:
    return FsTier(tmp_path / "hot", artifact_pb2.STORAGE_TIER_HOT)


def put(tier: FsTier, tmp_path, data: bytes, name="f"):
    src = tmp_path / name
    src.write_bytes(data)
    index = hash_file(src, CS)
    tier.put_file(index, src, move=True)
    return index


def read(tier, digest, offset=0, length=0) -> bytes:
    return b"".join(tier.open_range(digest, offset, length))


def test_roundtrip_and_ranges(tier, tmp_path):
    data = os.urandom(5 * CS + 123)
    index = put(tier, tmp_path, data)
    assert index.digest == hashlib.sha256(data).hexdigest()
    assert not (tmp_path / "f").exists()  # renamed in, not copied
    assert read(tier, index.digest) == data
    for off, n in [(0, 1), (CS - 1, 2), (CS, CS), (3 * CS + 7, 0), (len(data) - 1, 10), (len(data), 0)]:
        assert read(tier, index.digest, off, n) == data[off : off + n if n else None]
    assert list(tier.iter_digests()) == [index.digest]


def test_identical_content_is_stored_once(tier, tmp_path):
    data = os.urandom(1000)
    a = put(tier, tmp_path, data, "a")
    assert tier.put_file(hash_file(_write(tmp_path / "b", data), CS), tmp_path / "b", move=True) is False
    assert not (tmp_path / "b").exists()
    assert list(tier.iter_digests()) == [a.digest]


def _write(p, data):
    p.write_bytes(data)
    return p


def test_flipped_bit_is_detected_on_full_and_range_reads(tier, tmp_path):
    data = os.urandom(4 * CS)
    index = put(tier, tmp_path, data)
    path = tier.path(index.digest)
    raw = bytearray(path.read_bytes())
    raw[2 * CS + 100] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(DataLoss):
        read(tier, index.digest)
    with pytest.raises(DataLoss):
        read(tier, index.digest, 2 * CS + 50, 10)  # a range inside the damaged chunk
    assert read(tier, index.digest, 0, CS) == data[:CS]  # an untouched chunk still reads


def test_truncated_blob_is_detected(tier, tmp_path):
    data = os.urandom(3 * CS)
    index = put(tier, tmp_path, data)
    with open(tier.path(index.digest), "r+b") as f:
        f.truncate(3 * CS - 1)
    with pytest.raises(DataLoss):
        read(tier, index.digest)
    with pytest.raises(DataLoss):
        read(tier, index.digest, 0, 10)


def test_damaged_or_missing_index_is_data_loss(tier, tmp_path):
    index = put(tier, tmp_path, os.urandom(CS))
    idx = tier.path(index.digest).with_name(index.digest + ".chunks")
    idx.write_bytes(idx.read_bytes().replace(b"a", b"b", 1))
    with pytest.raises(DataLoss):
        read(tier, index.digest)
    idx.unlink()
    with pytest.raises(DataLoss):
        tier.read_index(index.digest)


def test_stream_put_refuses_content_that_does_not_match(tier, tmp_path):
    data = os.urandom(2 * CS)
    src = _write(tmp_path / "x", data)
    index = hash_file(src, CS)
    with pytest.raises(DataLoss):
        tier.put_stream(index, [data[:-1] + b"\0"])
    assert not tier.has(index.digest)
    assert [p.name for p in tier.path(index.digest).parent.iterdir() if p.name.startswith(".tmp")] == []
