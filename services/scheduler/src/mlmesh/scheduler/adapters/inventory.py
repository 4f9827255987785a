"""Where the scheduler learns the cluster's nodes, behind one small interface.

`KvInventory` reads the fabric's `nodes` KV bucket (fabric.v1.Node records), which is how it works
once the fabric service lands. `FileInventory` reads the same records from a JSON file, for a
fixed cluster or a local mesh without node agents.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from google.protobuf import json_format

from mlmesh.api.fabric.v1 import node_pb2
from mlmesh.common import contracts
from mlmesh.common.kv_index import KvIndex
from mlmesh.scheduler.convert import node_from_pb
from mlmesh.scheduler.domain.model import Node

NODES_BUCKET = contracts.NODES


class InventorySource(Protocol):
    def version(self) -> object:
        """Changes whenever the node list may have changed (cheap: asked every cycle)."""
        ...

    async def nodes(self) -> list[Node]:
        """Every known node with `free` = its full capacity; the caller subtracts what jobs hold."""
        ...


class KvInventory:
    """The fabric's node records, mirrored by a KV watch."""

    def __init__(self, index: KvIndex[node_pb2.Node]):
        self._index = index

    def version(self) -> object:
        return self._index.version

    async def nodes(self) -> list[Node]:
        return [node_from_pb(n) for n in self._index.items.values()]


class FileInventory:
    def __init__(self, path: Path):
        self._path = path
        self._cache: tuple[float, list[node_pb2.Node]] | None = None

    def version(self) -> object:
        return self._path.stat().st_mtime

    async def nodes(self) -> list[Node]:
        # Parsed again only when the file changes.
        mtime = self._path.stat().st_mtime
        if self._cache is None or self._cache[0] != mtime:
            records = json.loads(self._path.read_text())
            self._cache = (mtime, [json_format.ParseDict(r, node_pb2.Node()) for r in records])
        return [node_from_pb(n) for n in self._cache[1]]
