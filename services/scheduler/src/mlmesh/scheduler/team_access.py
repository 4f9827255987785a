"""TeamAccessService: NATS event credentials for a team, signed with the account signing key.

The credentials may only read the team's own events (`nats_permissions.team_permissions`): nats-server
enforces that, so handing them out needs no trust in the holder. The scheduler holds the team signing
key, a scoped key the account binds to the team permission template: it can issue team users and
nothing else (no service or admin user, no change to the account or its revocations).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nkeys
from google.protobuf.timestamp_pb2 import Timestamp

from mlmesh.api.scheduler.v1 import team_access_service_pb2 as api
from mlmesh.api.scheduler.v1 import team_access_service_pb2_grpc
from mlmesh.common import contracts, nats_permissions
from mlmesh.common.auth import ROLE_DEVELOPER, current_identity
from mlmesh.common.clock import duration_s
from mlmesh.common.errors import FailedPrecondition, InvalidArgument
from mlmesh.common.nats_auth import Credentials, issue_team_user

DEFAULT_TTL_S = 24 * 3600.0
MIN_TTL_S = 60.0
MAX_TTL_S = 7 * 24 * 3600.0


@dataclass(frozen=True)
class EventCredentialIssuer:
    signing_key: nkeys.KeyPair
    account_public_key: str

    @classmethod
    def from_files(cls, seed_file: Path, account_public_key: str) -> EventCredentialIssuer:
        return cls(nkeys.from_seed(seed_file.read_bytes().strip()), account_public_key)

    def issue(self, team: str, ttl_s: float) -> Credentials:
        """A user of the team's scope: the server gives it the team's permissions from its tag."""
        identity = nats_permissions.team_identity(team)
        return issue_team_user(self.signing_key, self.account_public_key, identity, team, ttl_s=ttl_s)


def ttl_seconds(request: api.IssueEventCredentialsRequest) -> float:
    if not request.HasField("ttl"):
        return DEFAULT_TTL_S
    ttl = duration_s(request.ttl, "ttl")  # ToTimedelta raised on out-of-range values: INTERNAL
    if not MIN_TTL_S <= ttl <= MAX_TTL_S:
        raise InvalidArgument.field("ttl", f"must be between {MIN_TTL_S:.0f} s and {MAX_TTL_S / 86400:.0f} days")
    return ttl


class TeamAccessServicer(team_access_service_pb2_grpc.TeamAccessServiceServicer):
    def __init__(self, issuer: EventCredentialIssuer | None):
        self._issuer = issuer

    async def IssueEventCredentials(self, request, context):
        caller = current_identity()
        team = request.team or caller.team
        contracts.subject_token(team, "team")
        caller.ensure_team(team, "team")  # another team's answers NOT_FOUND
        caller.require_role(ROLE_DEVELOPER)
        ttl = ttl_seconds(request)
        if self._issuer is None:
            raise FailedPrecondition(
                "event credentials are not configured on this scheduler (NATS_ACCOUNT_SIGNING_KEY_FILE)"
            )
        creds = self._issuer.issue(team, ttl)
        expires = Timestamp()
        expires.FromSeconds(creds.expires_at)
        return api.IssueEventCredentialsResponse(
            credentials=creds.text,
            public_key=creds.public_key,
            expires_at=expires,
            subjects=list(contracts.team_subjects(team)),
            inbox_prefix=contracts.inbox_prefix(nats_permissions.team_identity(team)),
            streams=[api.StreamFilter(stream=s, filter_subject=f) for s, f in contracts.team_streams(team)],
        )
