"""``Idempotency-Key`` (the IETF httpapi Idempotency-Key header draft): reading the key a
client sends with ``POST /<route>``, and the fingerprint that tells a retry of the same
request from another request under the same key.

The header is a Structured Field string (RFC 8941), ``Idempotency-Key: "order-42"``; a bare
token of visible ASCII but ``"`` and ``\\`` (``Idempotency-Key: order-42``), which many
clients send, is taken as well. A key is 1 to :data:`MAX_KEY_LENGTH` visible ASCII characters.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
KEY_PATTERN = f'^(?:"(?:[ !#-\\[\\]-~]|\\\\["\\\\])*"|[!#-\\[\\]-~]{{1,{MAX_KEY_LENGTH}}})$'
"""The header's value, for Python and ECMA-262 alike (the OpenAPI document states it)."""
_KEY = re.compile(KEY_PATTERN)
_ESCAPE = re.compile(r'\\(["\\])')


class InvalidKeyError(ValueError):
    """The header is there but holds no valid key: a 400."""


class IdempotencyConflictError(Exception):
    """The idempotency key is taken by a request with another body."""


def idempotency_key(values: Sequence[str]) -> str | None:
    """The key in the request's ``Idempotency-Key`` headers, None without one.

    Raises :class:`InvalidKeyError` for several headers, a malformed one, an empty key or
    one longer than :data:`MAX_KEY_LENGTH`.
    """
    if not values:
        return None
    if len(values) > 1:
        raise InvalidKeyError(f"one {HEADER} header, not {len(values)}")
    value = values[0].strip(" \t")
    if not _KEY.fullmatch(value):
        raise InvalidKeyError(
            f"{HEADER} must be a quoted string (or a bare token) of 1 to {MAX_KEY_LENGTH}"
            " visible ASCII characters"
        )
    key = _ESCAPE.sub(r"\1", value[1:-1]) if value.startswith('"') else value
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise InvalidKeyError(f"{HEADER} must have 1 to {MAX_KEY_LENGTH} characters")
    return key


def fingerprint(body: dict[str, Any]) -> str:
    """The SHA-256 of the body's canonical JSON: the same for the same object however its
    keys were ordered or spaced."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
