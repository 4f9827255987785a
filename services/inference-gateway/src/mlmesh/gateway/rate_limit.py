"""Per-team rate limits: a token bucket per team in valkey, taken atomically by one Lua script.

Keys are `mlmesh:gw:rl:{team}`: the gateway's valkey user may touch only `mlmesh:gw:*`. With valkey
unreachable the limiter allows (fails open): a cache outage must not become an inference outage.
"""

from __future__ import annotations

from prometheus_client import Counter

from mlmesh.common.errors import QuotaExceeded
from mlmesh.common.valkey_acl import GATEWAY_KEY_PREFIX
from mlmesh.gateway.cache import GuardedValkey, Unreachable

RATE_LIMITED = Counter("mlmesh_gateway_rate_limited_total", "Requests refused by a team's rate limit", ["team"])

# KEYS[1] bucket; ARGV[1] rate (tokens/s), ARGV[2] burst. The server's clock, so every gateway
# replica agrees. Returns 1 when a token was taken.
TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate)
end
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return allowed
"""


def rate_key(team: str, deployment: str = "") -> str:
    base = f"{GATEWAY_KEY_PREFIX}rl:{team}"
    return f"{base}:{deployment}" if deployment else base


class RateLimiter:
    def __init__(self, store: GuardedValkey | None, rate_per_s: float, burst: int):
        self.store = store
        self.rate_per_s = rate_per_s
        self.burst = burst if burst > 0 else max(1, int(rate_per_s))
        self._script = store.client.register_script(TOKEN_BUCKET) if store is not None else None

    @property
    def active(self) -> bool:
        return self._script is not None and self.rate_per_s > 0

    async def check(self, team: str, deployment: str = "", rate_per_s: float = 0.0, burst: int = 0) -> None:
        """Take a token of `team`'s bucket, or of its bucket for `deployment` when that deployment
        sets its own rate; QuotaExceeded when it is empty."""
        if self._script is None:
            return
        if rate_per_s > 0:
            key, burst = rate_key(team, deployment), burst if burst > 0 else max(1, int(rate_per_s))
            what = f"deployment {deployment}"
        elif self.rate_per_s > 0:
            key, rate_per_s, burst, what = rate_key(team), self.rate_per_s, self.burst, f"team {team}"
        else:
            return
        script = self._script
        args = [repr(float(rate_per_s)), str(burst)]
        try:
            allowed = await self.store.call("rate_limit", lambda c: script(keys=[key], args=args))
        except Unreachable:
            return  # fail open
        if int(allowed) != 1:
            RATE_LIMITED.labels(team).inc()
            raise QuotaExceeded(f"rate limit of {rate_per_s:g} requests/s exceeded for {what}")
