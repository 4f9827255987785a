"""Canary arm choice: a request goes to the canary with probability `percent` / 100.

With a sticky value (a header or metadata entry the deployment names) the choice is a hash of the
deployment and that value, so one user keeps seeing one version for as long as the split holds;
without one it is random per request.
"""

from __future__ import annotations

import hashlib
import random


def bucket(deployment: str, sticky_value: str) -> int:
    """A stable bucket 0-99 of a sticky value within one deployment."""
    digest = hashlib.blake2b(f"{deployment}\0{sticky_value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100


def use_canary(deployment: str, percent: int, sticky_value: str | None, rng: random.Random | None = None) -> bool:
    if percent <= 0:
        return False
    if percent >= 100:
        return True
    if sticky_value:
        return bucket(deployment, sticky_value) < percent
    return (rng or random).randrange(100) < percent
