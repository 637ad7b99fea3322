"""Signed, short-lived, scoped MQTT tokens: what they grant, how they are signed and checked.

A token is a JWT (RFC 7519) signed with HS256, made and checked with PyJWT. Its header names
the signing key in ``kid``; its claims are ``scope``, ``sub`` (the subtopic, daemon tokens
only), ``cid`` (the MQTT client id), ``iat`` and ``exp``. What a token may subscribe to is not
in the token: it follows from its scope and subtopic, here, for the issuer and the authorizer
alike.

Scopes: ``daemon`` tokens receive ``<topic_root>/<subtopic>/#`` (that daemon's completions);
``dashboard`` tokens receive ``<topic_root>/status/#`` only. No token may publish.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

ALGORITHM = "HS256"
DAEMON = "daemon"
DASHBOARD = "dashboard"
SCOPES = (DAEMON, DASHBOARD)
STATUS_SUBTOPIC = "status"
"""The status topics' level under the topic root; no daemon may use it as its subtopic."""
LEEWAY_SECONDS = 30
"""Clock skew allowed between the issuer and the authorizer, for ``exp`` and ``iat``."""
MAX_TOKEN_LENGTH = 2048
REQUIRED_CLAIMS = ["exp", "iat", "scope", "cid"]

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
    payload: dict[str, Any] = {
        "scope": claims.scope,
        "cid": claims.client_id,
        "iat": claims.issued_at,
        "exp": claims.expires_at,
    }
    if claims.subtopic is not None:
        payload["sub"] = claims.subtopic
    return jwt.encode(payload, key, algorithm=ALGORITHM, headers={"kid": key_id(key)})


def verify(token: str, keys: Mapping[str, bytes]) -> Claims:
    """The claims of a well-formed, authentic, current token; :class:`InvalidToken` otherwise.

    ``keys`` maps key ids to keys (the current one and, during a rotation, the previous one).
    Only HS256 is accepted, whatever the token's header says; ``exp`` and ``iat`` are checked
    against the clock with :data:`LEEWAY_SECONDS` of leeway.
    """
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("token too long")
    kid = unverified_key_id(token)
    if kid is None:
        raise InvalidToken("not a notifier token (no JWT with a key id)")
    key = keys.get(kid)
    if key is None:
        raise InvalidToken("bad signature (unknown key id)")
    try:
        body = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            leeway=LEEWAY_SECONDS,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("expired") from None
    except jwt.ImmatureSignatureError:
        raise InvalidToken("issued in the future") from None
    except jwt.InvalidSignatureError:
        raise InvalidToken("bad signature") from None
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(f"malformed token: {exc}") from None
    return _claims(body)


def unverified_key_id(token: str) -> str | None:
    """The key id a token names, unchecked: only to pick (or reload) the key to verify it with."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.InvalidTokenError:
        return None
    return kid if isinstance(kid, str) else None


def _claims(body: dict[str, Any]) -> Claims:
    scope, subtopic, client_id = body.get("scope"), body.get("sub"), body.get("cid")
    if scope not in SCOPES:
        raise InvalidToken(f"unknown scope {scope!r}")
    if not (subtopic is None or isinstance(subtopic, str)):
        raise InvalidToken("malformed subtopic")
    if not isinstance(client_id, str) or not CLIENT_ID.fullmatch(client_id):
        raise InvalidToken("malformed client id")
    issued_at, expires_at = body["iat"], body["exp"]
    if not isinstance(issued_at, int) or not isinstance(expires_at, int):
        raise InvalidToken("malformed times")
    claims = Claims(str(scope), subtopic, client_id, issued_at, expires_at)
    topic_filters("root", claims.scope, claims.subtopic)  # raises for a scope granting nothing
    return claims
