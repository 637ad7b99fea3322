"""Transaction ids, safe in URLs and as execution names: 26 characters of Crockford base32.

A new transaction gets a ULID (time-ordered, unique): 48 bits of Unix milliseconds, then 80
random bits. Within one millisecond the random part is incremented, so ids made by one
process sort in the order they were made. A ULID starts with 0-7 (its first character holds
3 bits).

A transaction started with an ``Idempotency-Key`` gets a *keyed* id instead: ``K`` and 125
bits of the SHA-256 of the route, the API key's name and the idempotency key, so every
instance derives the same id for the same request, and it never equals a ULID.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from notifier.config import RouteSettings

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
TXN_ID_PATTERN = "[0-7K][0-9A-HJKMNP-TV-Z]{25}"
"""A transaction id, ULID or keyed, for Python and ECMA-262 alike."""
_PATTERN = re.compile(TXN_ID_PATTERN)
KEYED_PREFIX = "K"
_RANDOM_BITS = 80


def _encode(value: int) -> str:
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


class _Generator:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_random = 0

    def __call__(self) -> str:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms <= self._last_ms:
                ms = self._last_ms
                rand = self._last_random + 1
                if rand >> _RANDOM_BITS:  # random part overflowed: borrow the next millisecond
                    ms, rand = ms + 1, secrets.randbits(_RANDOM_BITS)
            else:
                rand = secrets.randbits(_RANDOM_BITS)
            self._last_ms, self._last_random = ms, rand
        return _encode((ms << _RANDOM_BITS) | rand)


new_txn_id = _Generator()
"""Return a new transaction id."""


def keyed_txn_id(route: str, idempotency_key: str, api_key_name: str | None) -> str:
    """The id of the transaction ``idempotency_key`` names on ``route`` for the API key
    ``api_key_name`` (None: keys are not required): the same wherever it is computed."""
    digest = hashlib.sha256(
        "\0".join((route, api_key_name or "", idempotency_key)).encode()
    ).digest()
    value = int.from_bytes(digest, "big") >> (256 - 125)
    return KEYED_PREFIX + _encode(value)[1:]


def is_txn_id(value: str) -> bool:
    return _PATTERN.fullmatch(value) is not None


def is_keyed(txn_id: str) -> bool:
    return txn_id.startswith(KEYED_PREFIX) and is_txn_id(txn_id)


def txn_time(txn_id: str) -> datetime:
    """When the id was made (millisecond precision, UTC); keyed ids tell no time."""
    if not is_txn_id(txn_id) or is_keyed(txn_id):
        raise ValueError(f"not a time-ordered transaction id: {txn_id!r}")
    value = 0
    for char in txn_id:
        value = value * 32 + _ALPHABET.index(char)
    return datetime.fromtimestamp((value >> _RANDOM_BITS) / 1000, UTC)


def route_of(routes: Mapping[str, RouteSettings], execution_arn: str) -> str | None:
    """The route whose state machine ran the execution ``execution_arn``, if any."""
    machine_prefix = execution_arn.rpartition(":")[0]
    for name, route in routes.items():
        prefix, _, machine = route.state_machine.rpartition(":stateMachine:")
        if machine_prefix == f"{prefix}:execution:{machine}":
            return name
    return None
