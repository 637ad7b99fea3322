"""Transaction ids, safe in URLs and as execution names: 26 characters of Crockford base32.

A new transaction gets a ULID (time-ordered, unique): 48 bits of Unix milliseconds, then 80
random bits. Within one millisecond the random part is incremented, so ids made by one
process sort in the order they were made. A ULID starts with 0-7 (its first character holds
3 bits).

A transaction started with an ``Idempotency-Key`` gets a *keyed* id instead: ``K`` and 125
bits of the SHA-256 of the route, the API key's name and the idempotency key, so every
instance derives the same id for the same request, and it never equals a ULID.

An id made for an API key carries the key's *owner tag*: 20 bits of the SHA-256 of its name,
the first four characters after the time of a ULID (the rest of its random part still counts
up within a millisecond) or after the ``K`` of a keyed id. The execution is named by the id,
so its name tells every instance, for as long as Step Functions keeps it, which key started
it; ListExecutions can be filtered by owner without describing each execution. The
configuration refuses two keys with the same tag.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from notifier.apikeys import OWNER_TAG_CHARS, owner_tag
from notifier.config import RouteSettings

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
TXN_ID_PATTERN = "[0-7K][0-9A-HJKMNP-TV-Z]{25}"
"""A transaction id, ULID or keyed, for Python and ECMA-262 alike."""
_PATTERN = re.compile(TXN_ID_PATTERN)
KEYED_PREFIX = "K"
_RANDOM_BITS = 80
_ULID_TAG_AT = 10
"""Where a ULID's random part begins (its first ten characters are the time)."""


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


_new_ulid = _Generator()


def new_txn_id(owner: str | None = None) -> str:
    """A new transaction id; with the owner tag of the API key named ``owner``, if given."""
    ulid = _new_ulid()
    if owner is None:
        return ulid
    return ulid[:_ULID_TAG_AT] + owner_tag(owner) + ulid[_ULID_TAG_AT + OWNER_TAG_CHARS :]


def keyed_txn_id(route: str, idempotency_key: str, api_key_name: str | None) -> str:
    """The id of the transaction ``idempotency_key`` names on ``route`` for the API key
    ``api_key_name`` (None: keys are not required): the same wherever it is computed."""
    digest = hashlib.sha256(
        "\0".join((route, api_key_name or "", idempotency_key)).encode()
    ).digest()
    value = int.from_bytes(digest, "big") >> (256 - 125)
    hashed = _encode(value)[1:]
    if api_key_name is None:
        return KEYED_PREFIX + hashed
    return KEYED_PREFIX + owner_tag(api_key_name) + hashed[OWNER_TAG_CHARS:]


def tag_of(txn_id: str) -> str:
    """The owner tag in ``txn_id`` (meaningful only for an id made for an API key)."""
    at = 1 if is_keyed(txn_id) else _ULID_TAG_AT
    return txn_id[at : at + OWNER_TAG_CHARS]


def made_for(txn_id: str, api_key_name: str) -> bool:
    """Whether ``txn_id`` carries the owner tag of ``api_key_name``."""
    return is_txn_id(txn_id) and tag_of(txn_id) == owner_tag(api_key_name)


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
