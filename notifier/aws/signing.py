"""AWS Signature Version 4 for the fast path's requests, with the signing key kept.

SigV4 derives a signing key from the secret key, the day, the region and the service (four
HMACs), then signs each request with it (one more). The key only changes with those four,
so it is derived once a day per credentials and scope, as AWS's documentation suggests,
instead of for every request. What is signed is what botocore signs (the tests check each
signature against botocore's own signer): every header given, the host, the date, the
session token, and, where the service wants it (S3), the payload's hash as a header.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
_KEPT_KEYS = 16
"""Signing keys kept (old days and rotated credentials are dropped together)."""


@dataclass(frozen=True)
class Scope:
    """What a signature is scoped to, and how the service wants its requests signed."""

    region: str
    service: str
    normalize_path: bool = True
    """Normalize the path and encode it once more (every service but S3)."""
    payload_header: bool = False
    """Send what is signed as the payload in ``x-amz-content-sha256`` (S3)."""


class SigV4Signer:
    def __init__(self) -> None:
        self._keys: dict[tuple[str, str, str, str], bytes] = {}

    def sign(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        payload: str,
        scope: Scope,
        credentials: tuple[str, str, str | None],
        date: datetime | None = None,
    ) -> list[tuple[str, str]]:
        """``headers`` (the host's among them) with the date, the session token, the payload
        header where the scope wants it, and the ``Authorization`` signing them all.

        ``path`` is as sent (percent-encoded, no query string); ``payload`` is the body's
        SHA-256 in hex, or what the service accepts instead (``UNSIGNED-PAYLOAD``);
        ``credentials`` are the access key, the secret key and the session token (or None).
        """
        access_key, secret_key, token = credentials
        # time.strftime: a third of the CPU of datetime's, which looks it up at every call
        moment = date.astimezone(UTC).timetuple() if date is not None else time.gmtime()
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", moment)
        day = amz_date[:8]
        signed = [*headers, ("X-Amz-Date", amz_date)]
        if token:
            signed.append(("X-Amz-Security-Token", token))
        if scope.payload_header:
            signed.append(("X-Amz-Content-SHA256", payload))
        canonical: dict[str, str] = {}
        for name, value in signed:
            name, value = name.lower(), " ".join(value.split())
            canonical[name] = f"{canonical[name]},{value}" if name in canonical else value
        names = sorted(canonical)
        signed_names = ";".join(names)
        if scope.normalize_path:
            path = quote(_remove_dot_segments(path), safe="/~")
        request = "\n".join(
            (
                method,
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
        signed.append(
            (
                "Authorization",
                f"{ALGORITHM} Credential={access_key}/{credential_scope}, "
                f"SignedHeaders={signed_names}, Signature={signature}",
            )
        )
        return signed

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
