"""A team's model name ↔ the name its model has in Triton: `<team>--<model>`.

Team and model tokens are `[a-z0-9_-]` without `--`, so the mapping is one-to-one and a caller can
never name another team's model. Anything invalid answers NOT_FOUND, like a model that is not there.
"""

from __future__ import annotations

import re

from mlmesh.common.errors import NotFound

SEPARATOR = "--"
_TOKEN = re.compile(r"[a-z0-9_-]{1,128}")
_VERSION = re.compile(r"[0-9]{1,18}")


def _valid(token: str) -> bool:
    return bool(_TOKEN.fullmatch(token)) and SEPARATOR not in token


def triton_name(team: str, model: str) -> str:
    """The Triton name of `team`'s `model`; NotFound when either name is invalid."""
    if not _valid(team) or not _valid(model):
        raise NotFound(f"model {model!r} not found")
    return f"{team}{SEPARATOR}{model}"


def team_model_name(team: str, name: str) -> str:
    """The caller's name for a Triton model name of `team`; NotFound when it is another team's."""
    prefix = team + SEPARATOR
    model = name[len(prefix) :] if name.startswith(prefix) else ""
    if not _valid(team) or not _valid(model):
        raise NotFound("model not found")
    return model


def check_version(model: str, version: str) -> str:
    """A model version is empty (the server's policy picks) or a decimal number."""
    if version and not _VERSION.fullmatch(version):
        raise NotFound(f"model {model!r} version {version!r} not found")
    return version
