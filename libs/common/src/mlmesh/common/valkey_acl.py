"""The valkey ACL: one user, the gateway's; the default user is off, so nothing is anonymous.

Every gateway key (result cache, rate-limit buckets) starts with GATEWAY_KEY_PREFIX, and the server
refuses this user any other key. `mlmesh up` writes this ACL; deploy/k8s takes the same rules from
its Secret.
"""

from __future__ import annotations

GATEWAY_USER = "gateway"
GATEWAY_KEY_PREFIX = "mlmesh:gw:"

# Data commands on its own keys, plus what the rate-limit script needs (EVALSHA, SCRIPT LOAD after
# a NOSCRIPT, TIME inside the script). No admin or dangerous commands (CONFIG, FLUSHALL, KEYS,
# DEBUG...), and none that reach beyond its keys: SCAN and RANDOMKEY list every key, and FUNCTION
# (in @write) loads or flushes server-wide code.
GATEWAY_RULES = (
    f"resetkeys ~{GATEWAY_KEY_PREFIX}* resetchannels -@all +@read +@write -@admin -@dangerous"
    " -function -scan -randomkey +eval +evalsha +script|load +time +ping"
)


def acl_users(password: str) -> str:
    """ACL lines for a valkey config file or an `aclfile` (the password must have no spaces)."""
    if not password or any(c.isspace() for c in password):
        raise ValueError("a valkey password must be non-empty and without whitespace")
    return f"user default off\nuser {GATEWAY_USER} on >{password} {GATEWAY_RULES}\n"
