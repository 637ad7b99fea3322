"""Checks AWS Signature Version 4 on requests to the local stack (its AWS API endpoint and
its stand-in of an IAM-authenticated API Gateway API), the way AWS does: the signature is
recomputed with botocore's own signer from the request as received, for the one set of
credentials the local stack knows.

What AWS does next, evaluating the caller's IAM policy, is not done: any request signed with
the local credentials is allowed (there is no IAM enforcement on loopback).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from botocore.auth import SIGV4_TIMESTAMP, S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_CLOCK_SKEW = timedelta(minutes=5)
_AUTHORIZATION = re.compile(
    ALGORITHM + r" Credential=(?P<credential>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),"
    r"\s*Signature=(?P<signature>[0-9a-f]{64})"
)
_DIGEST = re.compile("[0-9a-f]{64}")


def signed_headers(
    method: str, url: str, credentials: Credentials, region: str, service: str
) -> dict[str, str]:
    """The headers that sign a request without a body, as any AWS client signs it: for the
    stack's own calls of its endpoint that no AWS SDK makes (its quota counters)."""
    request = AWSRequest(method=method, url=url, data=b"")
    SigV4Auth(credentials, service, region).add_auth(request)
    return dict(request.headers.items())


class SignatureRefused(Exception):
    """Why a request is refused (403), in API Gateway's words where it has them."""


@dataclass(frozen=True)
class SigV4Verifier:
    access_key_id: str
    secret_access_key: str
    region: str | None
    """The region requests are scoped to; None: any (the AWS endpoint serves every region)."""
    service: str | None = "execute-api"
    """The service requests are scoped to; None: any (the AWS endpoint serves them all)."""

    def check(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        now: datetime | None = None,
    ) -> str:
        """The access key id a correctly signed request was signed with;
        :class:`SignatureRefused` otherwise."""
        lower = {name.lower(): value for name, value in headers.items()}
        match = _AUTHORIZATION.fullmatch(lower.get("authorization", "").strip())
        if match is None:
            raise SignatureRefused("Missing Authentication Token")
        access_key, _, scope = match["credential"].partition("/")
        date, _, rest = scope.partition("/")
        if access_key != self.access_key_id:
            raise SignatureRefused("The security token included in the request is invalid.")
        parts = rest.split("/")
        region, service, terminator = parts if len(parts) == 3 else ("", "", "")
        if (
            terminator != "aws4_request"
            or not region
            or not service
            or self.region not in (None, region)
            or self.service not in (None, service)
        ):
            raise SignatureRefused(
                f"Credential should be scoped to a valid region and service "
                f"({self.region or '<region>'}/{self.service or '<service>'}), not {rest!r}."
            )
        timestamp = lower.get("x-amz-date", "")
        try:
            signed_at = datetime.strptime(timestamp, SIGV4_TIMESTAMP).replace(tzinfo=UTC)
        except ValueError:
            message = "Authorization header requires existence of a valid 'X-Amz-Date' header."
            raise SignatureRefused(message) from None
        if abs((now or datetime.now(UTC)) - signed_at) > MAX_CLOCK_SKEW or date != timestamp[:8]:
            raise SignatureRefused(f"Signature expired: {timestamp} is not within 5 minutes")
        signed = match["signed"].split(";")
        if "host" not in signed or any(name not in lower for name in signed):
            raise SignatureRefused("The request signature names headers it does not have.")
        declared = lower.get("x-amz-content-sha256")
        # A digest must be the body's; S3's other values (UNSIGNED-PAYLOAD, ...) are signed as is.
        digest = declared is not None and _DIGEST.fullmatch(declared) is not None
        if digest and declared != hashlib.sha256(body).hexdigest():
            raise SignatureRefused("The request body does not match its x-amz-content-sha256.")

        request = AWSRequest(method, url, {name: lower[name] for name in signed}, body)
        request.context["timestamp"] = timestamp
        # S3 signs its path as sent (no normalisation) and says what it signed as payload.
        signer_class = S3SigV4Auth if service == "s3" else SigV4Auth
        signer = signer_class(
            Credentials(self.access_key_id, self.secret_access_key), service, region
        )
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        if not hmac.compare_digest(expected, match["signature"]):
            raise SignatureRefused(
                "The request signature we calculated does not match the signature you provided."
            )
        return access_key
