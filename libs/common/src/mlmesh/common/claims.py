"""Which claims of a verified token name the caller's team and roles.

mlmesh's own tokens carry `team` (a string) and `roles` (a list of strings); that is the default
and is checked strictly. An identity provider puts them elsewhere (Keycloak: `groups` and
`realm_access.roles`; Auth0: namespaced claims such as `https://example.com/team`), so a configured
mapping reads:
- a claim by name, or by a dotted path into nested objects;
- the team from a string or a list (groups), keeping only entries that start with `team_prefix`,
  minus the prefix; exactly one team must remain;
- roles from a list or a space-separated string (`scope`-style), translated by `role_map` when one
  is set (IdP roles it does not name are dropped).
Every failure is UNAUTHENTICATED with a message naming the check, never the token or its values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mlmesh.common.errors import Unauthenticated
from mlmesh.common.events import is_token


@dataclass(frozen=True)
class ClaimMapping:
    team_claim: str = "team"
    roles_claim: str = "roles"
    team_prefix: str = ""
    role_map: Mapping[str, str] | None = field(default=None, hash=False)

    @property
    def native(self) -> bool:
        """Whether tokens are read as mlmesh mints them (no mapping configured)."""
        return self == ClaimMapping()

    def team(self, claims: Mapping) -> str:
        value = claim_at(claims, self.team_claim)
        if self.native:
            teams = [value] if isinstance(value, str) and value else []
        elif isinstance(value, str):
            teams = [value]
        elif value is None or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            teams = value or []
        else:
            raise Unauthenticated(f"invalid token: the {self.team_claim} claim must be a string or a list of strings")
        if self.team_prefix:
            teams = [t.removeprefix(self.team_prefix) for t in teams if t.startswith(self.team_prefix)]
        distinct = set(teams)
        if not distinct:
            where = f" with the prefix {self.team_prefix!r}" if self.team_prefix else ""
            raise Unauthenticated(f"invalid token: no {self.team_claim} claim{where}")
        if len(distinct) > 1:
            raise Unauthenticated(f"invalid token: more than one team in the {self.team_claim} claim")
        (team,) = distinct
        # The team becomes a NATS subject token and a key prefix, so it must be one.
        if not is_token(team):
            raise Unauthenticated("invalid token: the team is not a valid team name ([a-z0-9_-])")
        return team

    def roles(self, claims: Mapping) -> frozenset[str]:
        value = claim_at(claims, self.roles_claim)
        if not value:
            value = []
        elif isinstance(value, str) and not self.native:
            value = value.split()
        if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
            raise Unauthenticated(f"invalid token: {self.roles_claim} must be a list of strings")
        if self.role_map is None:
            return frozenset(value)
        return frozenset(self.role_map[r] for r in value if r in self.role_map)


def claim_at(claims: Mapping, path: str):
    """The claim named `path`, else the value at its dotted path (`realm_access.roles`), else None."""
    if path in claims:  # namespaced claim names (URLs) contain dots themselves
        return claims[path]
    node = claims
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node
