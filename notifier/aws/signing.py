"""AWS Signature Version 4 for the fast path's requests, with the signing key kept.

SigV4 derives a signing key from the secret key, the day, the region and the service (four
HMACs), then signs each request with it (one more). The key only changes with those four,
so it is derived once a day per credentials and scope, as AWS's documentation suggests,
instead of for every request. What is signed is what botocore signs (the tests check each
signature against botocore's own signer): the headers given but those botocore leaves
unsigned (``User-Agent``, hop-by-hop and tracing headers), the date, the session token,
and for S3 the payload's hash as a header.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple
from urllib.parse import quote

from botocore.auth import SIGNED_HEADERS_BLACKLIST

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED = frozenset(SIGNED_HEADERS_BLACKLIST)
"""Headers sent as given but not signed, as botocore leaves them (a proxy may change them)."""
ADDED = frozenset({"authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"})
"""Headers the signer adds, which a request must not have already."""
_KEPT_KEYS = 16
"""Signing keys kept (old days and rotated credentials are dropped together)."""


class Credentials(NamedTuple):
    """As botocore's frozen credentials."""

    access_key: str
    secret_key: str
    token: str | None


@dataclass(frozen=True)
class Scope:
    """What a signature is scoped to. S3 has a way of its own (botocore's ``S3SigV4Auth``):
    the path is signed as sent, and what is signed as the payload is sent in
    ``x-amz-content-sha256``; every other service has its path normalized and encoded once
    more, and no such header."""

    region: str
    service: str

    @property
    def s3(self) -> bool:
        return self.service == "s3"


class SigV4Signer:
    """Signs requests, keeping the signing key of each credentials, day and scope."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str, str, str], bytes] = {}

    def sign(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        payload: str,
        scope: Scope,
        credentials: Credentials,
        date: datetime | None = None,
    ) -> list[tuple[str, str]]:
        """``headers`` (the host's among them) with the date, the session token, S3's
        payload header, and the ``Authorization`` signing them.

        ``path`` is as sent (percent-encoded, no query string); ``payload`` is the body's
        SHA-256 in hex, or what the service accepts instead (``UNSIGNED-PAYLOAD``); ``date``
        is now unless given (with its time zone). A request that already has a header the
        signer adds, a query string or a naive ``date`` is a ``ValueError``.
        """
        access_key, secret_key, token = credentials
        if "?" in path:
            raise ValueError("a query string is not signed here")
        if date is not None and date.utcoffset() is None:
            raise ValueError("the signing date has no time zone")
        if own := ADDED & {name.lower() for name, _ in headers}:
            raise ValueError(f"the request has headers the signer adds: {', '.join(sorted(own))}")
        # time.strftime: a third of the CPU of datetime's, which looks it up at every call
        moment = date.astimezone(UTC).timetuple() if date is not None else time.gmtime()
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", moment)
        day = amz_date[:8]
        sent = [*headers, ("X-Amz-Date", amz_date)]
        if token:
            sent.append(("X-Amz-Security-Token", token))
        if scope.s3:
            sent.append(("X-Amz-Content-SHA256", payload))
        canonical: dict[str, str] = {}
        for name, value in sent:
            name, value = name.lower(), " ".join(value.split())
            if name in UNSIGNED:
                continue
            canonical[name] = f"{canonical[name]},{value}" if name in canonical else value
        names = sorted(canonical)
        signed_names = ";".join(names)
        if not scope.s3:
            path = quote(_remove_dot_segments(path), safe="/~")
        request = "\n".join(
            (
                method.upper(),
                path,
                "",
                "".join(f"{name}:{canonical[name]}\n" for name in names),
                signed_names,
                payload,
            )
        )
        credential_scope = f"{day}/{scope.region}/{scope.service}/aws4_request"
        to_sign = "\n".join(
            (ALGORITHM, amz_date, credential_scope, hashlib.sha256(request.encode()).hexdigest())
        )
        key = self._key(secret_key, day, scope.region, scope.service)
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        sent.append(
            (
                "Authorization",
                f"{ALGORITHM} Credential={access_key}/{credential_scope}, "
                f"SignedHeaders={signed_names}, Signature={signature}",
            )
        )
        return sent

    def _key(self, secret_key: str, day: str, region: str, service: str) -> bytes:
        cache_key = (secret_key, day, region, service)
        key = self._keys.get(cache_key)
        if key is None:
            if len(self._keys) >= _KEPT_KEYS:
                self._keys.clear()
            key = ("AWS4" + secret_key).encode()
            for part in (day, region, service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys[cache_key] = key
        return key


def _remove_dot_segments(path: str) -> str:
    """The path without ``.``, ``..`` or empty segments, as AWS signs it (RFC 3986, 5.2.4;
    consecutive slashes are one)."""
    kept: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if kept:
                kept.pop()
        elif segment and segment != ".":
            kept.append(segment)
    trailing = "/" if path.endswith("/") and kept else ""
    return "/" + "/".join(kept) + trailing
