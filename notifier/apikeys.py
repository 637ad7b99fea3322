"""API keys for the requests that start or stop executions, each with its own rate limit.

Keys are configured by the SHA-256 of their value, so the configuration file holds no
secret; a client sends the key itself in ``x-api-key``. Each key has a token bucket: a
sustained ``rate`` per second with bursts up to ``burst``; beyond it, 429 with Retry-After.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from notifier.token_bucket import TokenBucket

HEADER = "x-api-key"


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: str
    rate: float
    burst: int


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Verdict:
    status: int
    """200 to go on, 401 without a valid key, 429 over the key's rate."""
    key_name: str | None = None
    retry_after: int = 0


class ApiKeys:
    def __init__(
        self, keys: Mapping[str, ApiKey], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._keys = {key.sha256.lower(): key for key in keys.values()}
        self._buckets = {
            key.sha256.lower(): TokenBucket(key.rate, key.burst, clock) for key in keys.values()
        }

    def replace(self, other: ApiKeys) -> None:
        """Take ``other``'s keys; an unchanged key keeps its bucket (a reload is no refill)."""
        buckets = {
            digest: self._buckets.get(digest, bucket) for digest, bucket in other._buckets.items()
        }
        self._keys, self._buckets = other._keys, buckets

    def check(self, presented: str | None) -> Verdict:
        if not presented:
            return Verdict(401)
        digest = hash_key(presented)
        # The dict lookup only ever sees the digest of what was presented.
        key = self._keys.get(digest)
        if key is None or not hmac.compare_digest(key.sha256.lower(), digest):
            return Verdict(401)
        wait = self._buckets[digest].take()
        if wait:
            return Verdict(429, key.name, max(1, math.ceil(wait)))
        return Verdict(200, key.name)
