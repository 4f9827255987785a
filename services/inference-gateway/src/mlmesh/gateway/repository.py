"""Triton's model repository as the gateway writes it: one directory per deployment
(`<team>--<deployment>`), `config.pbtxt`, and a directory per registry version.

Every write is staged and renamed into place, so a crash leaves either the previous state or the
new one, never a half-written version Triton could load: a version directory exists only once its
files are complete (marked by `.complete`), and config.pbtxt is replaced atomically.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from mlmesh.gateway.triton_model import MODEL_PY

log = logging.getLogger("mlmesh.gateway.repository")

STAGING = ".staging"
TRASH = ".trash"
COMPLETE = ".complete"


class ModelRepository:
    def __init__(self, root: Path):
        self.root = root

    def model_dir(self, triton: str) -> Path:
        return self.root / triton

    def version_dir(self, triton: str, version: int) -> Path:
        return self.model_dir(triton) / str(version)

    def has_version(self, triton: str, version: int) -> bool:
        return (self.version_dir(triton, version) / COMPLETE).is_file()

    def versions(self, triton: str) -> list[int]:
        directory = self.model_dir(triton)
        if not directory.is_dir():
            return []
        return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and (p / COMPLETE).is_file())

    async def start(self) -> None:
        """Create the root and clear what a crash left in the staging and trash areas."""
        await asyncio.to_thread(self._start)

    def _start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for area in (STAGING, TRASH):
            shutil.rmtree(self.root / area, ignore_errors=True)

    async def build_version(self, triton: str, version: int, fill: Callable[[Path], Awaitable[None]]) -> Path:
        """Build a version directory: `fill(staging_dir)` writes the model's files, then the
        python-backend model.py is added and the whole directory renamed into place."""
        staging = self.root / STAGING / f"{triton}-{version}-{uuid.uuid4().hex[:8]}"
        await asyncio.to_thread(staging.mkdir, parents=True)
        try:
            await fill(staging)
            await asyncio.to_thread(self._finish_version, staging, triton, version)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, staging, True)
            raise
        return self.version_dir(triton, version)

    def _finish_version(self, staging: Path, triton: str, version: int) -> None:
        shutil.copyfile(MODEL_PY, staging / "model.py")
        (staging / COMPLETE).write_text("")
        target = self.version_dir(triton, version)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # an incomplete leftover (no marker): replaced
            self._discard(target)
        os.rename(staging, target)

    async def write_config(self, triton: str, text: str) -> None:
        await asyncio.to_thread(self._write_config, triton, text)

    def _write_config(self, triton: str, text: str) -> None:
        directory = self.model_dir(triton)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".config.pbtxt.{uuid.uuid4().hex[:8]}"
        tmp.write_text(text)
        os.replace(tmp, directory / "config.pbtxt")

    def read_config(self, triton: str) -> str | None:
        try:
            return (self.model_dir(triton) / "config.pbtxt").read_text()
        except OSError:
            return None

    async def prune(self, triton: str, keep: set[int]) -> None:
        """Remove version directories not in `keep` (Triton no longer loads them)."""
        await asyncio.to_thread(self._prune, triton, keep)

    def _prune(self, triton: str, keep: set[int]) -> None:
        directory = self.model_dir(triton)
        if not directory.is_dir():
            return
        for child in directory.iterdir():
            if child.name.isdigit() and int(child.name) not in keep:
                self._discard(child)

    async def remove(self, triton: str) -> None:
        await asyncio.to_thread(self._discard, self.model_dir(triton))

    def _discard(self, path: Path) -> None:
        """Move out of Triton's sight at once (a rename), then delete."""
        if not path.exists():
            return
        trash = self.root / TRASH / uuid.uuid4().hex
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
