"""API keys: who a request comes from, what roles it has, and its limits.

Keys are configured by the SHA-256 of their value, so the configuration file holds no
secret; a client sends the key itself in ``x-api-key``. Each key has a token bucket: a
sustained ``rate`` per second with bursts up to ``burst``; beyond it, 429 with Retry-After.
Each key also has a budget of requests held at once (``max_held``), so that one key cannot
take all of the daemon's.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from notifier.token_bucket import TokenBucket

HEADER = "x-api-key"
ROLES = ("approver", "admin")
"""The roles the daemon itself gives a meaning; a route's ``start_roles`` may name others."""
OWNER_TAG_CHARS = 4
_CROCKFORD_BASE32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: str
    rate: float
    burst: int
    max_held: int = 100
    roles: frozenset[str] = frozenset()

    @property
    def admin(self) -> bool:
        return "admin" in self.roles

    @property
    def approver(self) -> bool:
        return "approver" in self.roles


class KeyBudgetError(Exception):
    """The key holds as many requests as it may."""


def owner_tag(api_key_name: str) -> str:
    """The four characters (20 bits of a SHA-256 of the name, in the transaction ids'
    alphabet) that the ids of transactions started with ``api_key_name`` carry."""
    digest = hashlib.sha256(b"owner\0" + api_key_name.encode()).digest()
    value = int.from_bytes(digest[:4], "big") >> 12
    shifts = range(5 * (OWNER_TAG_CHARS - 1), -1, -5)
    return "".join(_CROCKFORD_BASE32[(value >> shift) & 31] for shift in shifts)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Verdict:
    status: int
    """200 to go on, 401 without a valid key, 429 over the key's rate."""
    key: ApiKey | None = None
    retry_after: int = 0

    @property
    def key_name(self) -> str | None:
        return self.key.name if self.key is not None else None


class ApiKeys:
    def __init__(
        self, keys: Mapping[str, ApiKey], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._keys = {key.sha256.lower(): key for key in keys.values()}
        self._buckets = {
            key.sha256.lower(): TokenBucket(key.rate, key.burst, clock) for key in keys.values()
        }
        self._held: dict[str, int] = {}
        """Requests held now, by key name."""

    def replace(self, other: ApiKeys) -> None:
        """Take ``other``'s keys; an unchanged key keeps its bucket (a reload is no refill)."""
        buckets = {
            digest: self._buckets.get(digest, bucket) for digest, bucket in other._buckets.items()
        }
        self._keys, self._buckets = other._keys, buckets

    @contextmanager
    def holding(self, key: ApiKey | None) -> Iterator[None]:
        """Count a request of ``key`` (None: keys not required) as held while inside;
        :class:`KeyBudgetError` if the key holds its ``max_held`` already."""
        if key is None:
            yield
            return
        held = self._held.get(key.name, 0)
        if held >= key.max_held:
            raise KeyBudgetError(f"API key {key.name!r} holds {held} requests, its max_held")
        self._held[key.name] = held + 1
        try:
            yield
        finally:
            if self._held[key.name] == 1:
                del self._held[key.name]
            else:
                self._held[key.name] -= 1

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
            return Verdict(429, key, max(1, math.ceil(wait)))
        return Verdict(200, key)
