"""The files of one deployed version: the registry version's artifact under `model/` and, for an
adapter, its base model under `base/`, fetched from storage (or, for `builtin:minilm`, copied from
the package that ships it). Triton may run elsewhere, so everything is copied into the repository.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from mlmesh.api.storage.v1 import model_registry_pb2 as mr
from mlmesh.common import builtin_models
from mlmesh.common.errors import FailedPrecondition, NotFound
from mlmesh.common.storage_client import StorageClient

ADAPTER = mr.WEIGHTS_KIND_ADAPTER


async def fill_version(storage: StorageClient, version: mr.ModelVersion, staging: Path) -> None:
    await storage.download_artifact(version.artifact_id, version.team, staging / "model", "spec.model")
    if version.weights_kind == ADAPTER:
        await _fill_base(storage, version, staging / "base")


async def _fill_base(storage: StorageClient, version: mr.ModelVersion, dest: Path) -> None:
    ref = version.base_model
    what = f"model {version.name} version {version.version}: base model {ref!r}"
    if builtin_models.is_builtin(ref):
        try:
            name = builtin_models.builtin_name(ref)
        except ValueError as exc:
            raise FailedPrecondition(f"{what}: {exc}") from None
        if not builtin_models.has_pretrained_weights(name):
            raise FailedPrecondition(
                f"{what} has random weights that are not stored anywhere; deploy a full fine-tune of it instead"
            )
        await asyncio.to_thread(shutil.copytree, builtin_models.minilm_path(), dest)
        return
    if ref.startswith("artifact://"):
        await storage.download_artifact(ref.removeprefix("artifact://"), version.team, dest, "spec.model")
        return
    if ref.startswith("model://"):
        name, _, selector = ref.removeprefix("model://").partition("@")
        if selector.isdigit() or not selector:
            base = await storage.model_version(name, version=int(selector or 0))
        else:
            base = await storage.model_version(name, alias=selector)
        if base.team != version.team:
            raise NotFound(f"{what} not found")
        if base.weights_kind == ADAPTER:
            raise FailedPrecondition(f"{what} is itself an adapter; adapters of adapters are not served")
        await storage.download_artifact(base.artifact_id, version.team, dest, "spec.model")
        return
    raise FailedPrecondition(f"{what} cannot be fetched: bases are builtin:minilm, model:// or artifact:// references")
