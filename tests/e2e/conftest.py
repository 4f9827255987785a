"""The one real mesh the e2e security suites share (auth matrix, cross-team matrix, fuzzing).

`live_mesh` is session-scoped: `mesh.up` once for the whole run, `mesh.down` at the end, also when
a test failed. `MLMESH_E2E_STATE_DIR=<state dir>` attaches to a mesh that is already running (for
working on these suites; it is left running).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlmesh.common.auth import ROLE_DEVELOPER, mint_token
from mlmesh.local import mesh


@dataclass(frozen=True)
class LiveMesh:
    root: Path
    endpoints: dict

    @property
    def auth_dir(self) -> Path:
        return self.root / "auth"

    @property
    def signing_key(self) -> bytes:
        return (self.auth_dir / "signing_key.pem").read_bytes()

    @property
    def public_key(self) -> bytes:
        return (self.auth_dir / "public_key.pem").read_bytes()

    @property
    def admin_token(self) -> str:
        return (self.auth_dir / "admin.token").read_text().strip()

    def service_token(self, service: str) -> str:
        return (self.auth_dir / f"{service}.token").read_text().strip()

    def token(self, team: str, roles: Iterable[str] = (ROLE_DEVELOPER,), *, subject: str = "", **kw) -> str:
        """A token signed with the mesh's dev key, as a team member holds one."""
        return mint_token(self.signing_key, subject=subject or f"{team}-user", team=team, roles=roles, **kw)

    @property
    def services(self) -> dict[str, dict]:
        return self.endpoints["services"]

    def target(self, service: str) -> str:
        return self.services[service]["grpc"]

    @property
    def gateway_http(self) -> str:
        return self.services["inference-gateway"]["http_url"]


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="session")
def live_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveMesh]:
    attach = os.environ.get("MLMESH_E2E_STATE_DIR")
    if attach:
        root = Path(attach).resolve()
        endpoints = mesh.read_endpoints(root)
        assert endpoints, f"no mesh recorded in {root}"
        yield LiveMesh(root, endpoints)
        return
    root = tmp_path_factory.mktemp("mesh") / "state"
    endpoints = mesh.up(root, timeout=180)  # on failure `up` stops what it started
    try:
        yield LiveMesh(root, endpoints)
    finally:
        mesh.down(root)
