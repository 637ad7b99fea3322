"""Signed, short-lived, scoped MQTT tokens: what they grant, how they are signed and checked.

A token is ``nt1.<claims>.<signature>``: the claims are base64url JSON
``{"kid", "scope", "sub", "cid", "iat", "exp"}``, the signature is base64url HMAC-SHA256 of
``nt1.<claims>`` with the key named by ``kid``. What a token may subscribe to is not in the
token: it follows from its scope and subtopic, here, for the issuer and the authorizer alike.

Scopes: ``daemon`` tokens receive ``<topic_root>/<subtopic>/#`` (that daemon's completions);
``dashboard`` tokens receive ``<topic_root>/status/#`` only. No token may publish.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

PREFIX = "nt1"
DAEMON = "daemon"
DASHBOARD = "dashboard"
SCOPES = (DAEMON, DASHBOARD)
STATUS_SUBTOPIC = "status"
"""The status topics' level under the topic root; no daemon may use it as its subtopic."""
CLOCK_SKEW_SECONDS = 60
MAX_TOKEN_LENGTH = 2048

SUBTOPIC = re.compile(r"[A-Za-z0-9_-]{1,64}")
CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}\.[a-f0-9]{12}")


class InvalidToken(Exception):
    """Why a token is refused, in a few words (for logs; never sent to the client)."""


@dataclass(frozen=True)
class Claims:
    scope: str
    subtopic: str | None
    client_id: str
    issued_at: int
    expires_at: int


def valid_subtopic(subtopic: str) -> bool:
    return bool(SUBTOPIC.fullmatch(subtopic)) and subtopic != STATUS_SUBTOPIC


def topic_filters(topic_root: str, scope: str, subtopic: str | None) -> list[str]:
    """The MQTT topic filters a token of ``scope`` may subscribe to and receive from."""
    if scope == DAEMON and subtopic is not None and valid_subtopic(subtopic):
        return [f"{topic_root}/{subtopic}/#"]
    if scope == DASHBOARD and subtopic is None:
        return [f"{topic_root}/{STATUS_SUBTOPIC}/#"]
    raise InvalidToken(f"scope {scope!r} with subtopic {subtopic!r} grants nothing")


def new_client_id(scope: str, subtopic: str | None) -> str:
    """A fresh MQTT client id: each token gets its own, so a new connection made with a
    refreshed token never takes over the one it replaces."""
    return f"{subtopic if scope == DAEMON else DASHBOARD}.{secrets.token_hex(6)}"


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"notifier-token-key\0" + key).hexdigest()[:12]


def sign(claims: Claims, key: bytes) -> str:
    body = {
        "kid": key_id(key),
        "scope": claims.scope,
        "sub": claims.subtopic,
        "cid": claims.client_id,
        "iat": claims.issued_at,
        "exp": claims.expires_at,
    }
    encoded = _b64encode(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    signed = f"{PREFIX}.{encoded}"
    return f"{signed}.{_b64encode(_mac(key, signed))}"


def verify(token: str, keys: Mapping[str, bytes], now: float) -> Claims:
    """The claims of a well-formed, authentic, current token; :class:`InvalidToken` otherwise.

    ``keys`` maps key ids to keys (the current one and, during a rotation, the previous one).
    """
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("token too long")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise InvalidToken("not a notifier token")
    try:
        body = json.loads(_b64decode(parts[1]))
        signature = _b64decode(parts[2])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidToken("malformed token") from None
    if not isinstance(body, dict):
        raise InvalidToken("malformed claims")
    kid = body.get("kid")
    key = keys.get(kid) if isinstance(kid, str) else None
    # Compared even for an unknown key id, so the answer takes the same time either way.
    expected = _mac(key or b"\0" * 32, f"{parts[0]}.{parts[1]}")
    if not hmac.compare_digest(expected, signature) or key is None:
        raise InvalidToken("bad signature")
    claims = _claims(body)
    if claims.expires_at <= now:
        raise InvalidToken("expired")
    if claims.issued_at > now + CLOCK_SKEW_SECONDS:
        raise InvalidToken("issued in the future")
    return claims


def unverified_key_id(token: str) -> str | None:
    """The key id a token names, unchecked: only to pick (or reload) the key to verify it with."""
    parts = token.split(".")
    try:
        body = json.loads(_b64decode(parts[1])) if len(parts) == 3 else None
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    kid = body.get("kid") if isinstance(body, dict) else None
    return kid if isinstance(kid, str) else None


def _claims(body: dict[str, object]) -> Claims:
    scope, subtopic, client_id = body.get("scope"), body.get("sub"), body.get("cid")
    issued_at, expires_at = body.get("iat"), body.get("exp")
    if scope not in SCOPES:
        raise InvalidToken(f"unknown scope {scope!r}")
    if not (subtopic is None or isinstance(subtopic, str)):
        raise InvalidToken("malformed subtopic")
    if not isinstance(client_id, str) or not CLIENT_ID.fullmatch(client_id):
        raise InvalidToken("malformed client id")
    if not isinstance(issued_at, int) or not isinstance(expires_at, int):
        raise InvalidToken("malformed times")
    claims = Claims(str(scope), subtopic, client_id, issued_at, expires_at)
    topic_filters("root", claims.scope, claims.subtopic)  # raises for a scope granting nothing
    return claims


def _mac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
