"""Model-repository writes are staged and renamed: a failed fill leaves nothing behind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mlmesh.gateway.repository import ModelRepository


def test_versions_appear_whole_or_not_at_all(tmp_path: Path):
    repo = ModelRepository(tmp_path / "models")

    async def good(staging: Path) -> None:
        (staging / "model").mkdir()
        (staging / "model" / "config.json").write_text("{}")

    async def bad(staging: Path) -> None:
        (staging / "model").mkdir()
        raise RuntimeError("download broke")

    async def scenario():
        await repo.start()
        await repo.build_version("t--m", 1, good)
        with pytest.raises(RuntimeError):
            await repo.build_version("t--m", 2, bad)
        await repo.write_config("t--m", "name: 't--m'\n")

    asyncio.run(scenario())
    assert repo.has_version("t--m", 1) and not repo.has_version("t--m", 2)
    assert (repo.version_dir("t--m", 1) / "model.py").is_file()
    assert not (repo.model_dir("t--m") / "2").exists()
    assert not any((repo.root / ".staging").iterdir())
    assert repo.read_config("t--m") == "name: 't--m'\n"
    assert [p.name for p in repo.model_dir("t--m").iterdir() if p.name.startswith(".config")] == []
    asyncio.run(repo.prune("t--m", {2}))
    assert repo.versions("t--m") == []
    asyncio.run(repo.remove("t--m"))
    assert not repo.model_dir("t--m").exists()
