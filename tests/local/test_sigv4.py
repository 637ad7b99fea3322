"""The local token API's SigV4 check: botocore's signer on both sides, and every way a
request can be signed wrongly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from notifier.local.sigv4 import SignatureRefused, SigV4Verifier

URL = "http://127.0.0.1:4567/tokens/daemon/alpha"
VERIFIER = SigV4Verifier("local", "local", "us-east-1")


def signed(
    url: str = URL,
    body: bytes = b"",
    key: str = "local",
    secret: str = "local",
    region: str = "us-east-1",
    service: str = "execute-api",
) -> dict[str, str]:
    """The headers a client sends: botocore's SigV4 ones, and Host from the URL."""
    request = AWSRequest(method="POST", url=url, data=body, headers={})
    SigV4Auth(Credentials(key, secret), service, region).add_auth(request)
    return {**dict(request.headers.items()), "Host": url.split("/")[2]}


def test_a_request_signed_with_the_local_credentials_is_accepted() -> None:
    assert VERIFIER.check("POST", URL, signed(), b"") == "local"
    body = b'{"anything": 1}'
    assert VERIFIER.check("POST", URL, signed(body=body), body) == "local"
    # Headers the client did not sign may be added on the way (as proxies do).
    assert VERIFIER.check("POST", URL, {**signed(), "Accept": "*/*"}, b"") == "local"


# Each case: the request as sent (method, URL, extra headers, body), how it was signed
# (None: not at all), and what the refusal says. Signed when the test runs: a signature
# made at collection would be minutes old by then.
@pytest.mark.parametrize(
    ("method", "url", "headers", "body", "signing", "message"),
    [
        ("POST", URL, {}, b"", None, "Missing Authentication Token"),
        ("POST", URL, {"Authorization": "Bearer x"}, b"", None, "Missing Authentication Token"),
        ("POST", URL, {}, b"", {"secret": "guess"}, "signature we calculated does not match"),
        ("POST", URL, {}, b"", {"key": "AKIDOTHER"}, "security token included in the request"),
        ("POST", URL, {}, b"", {"region": "eu-west-1"}, "scoped to a valid region"),
        ("POST", URL, {}, b"", {"service": "iotdevicegateway"}, "scoped to a valid region"),
        ("POST", URL.replace("alpha", "beta"), {}, b"", {}, "does not match"),
        ("GET", URL, {}, b"", {}, "does not match"),
        ("POST", URL, {}, b'{"x": 1}', {"body": b"{}"}, "does not match"),
        ("POST", URL, {"Host": "127.0.0.1:9999"}, b"", {}, "does not match"),
    ],
    ids=[
        "unsigned", "other-scheme", "wrong-secret", "unknown-key", "wrong-region",
        "wrong-service", "other-path", "other-method", "other-body", "other-host",
    ],
)  # fmt: skip
def test_badly_signed_requests_are_refused(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    signing: dict[str, Any] | None,
    message: str,
) -> None:
    sent = {**(signed(**signing) if signing is not None else {}), **headers}
    with pytest.raises(SignatureRefused, match=message):
        VERIFIER.check(method, url, sent, body)


def test_a_signature_older_than_five_minutes_is_refused() -> None:
    headers = signed()
    signed_at = datetime.strptime(headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert VERIFIER.check("POST", URL, headers, b"", now=signed_at + timedelta(minutes=4))
    with pytest.raises(SignatureRefused, match="Signature expired"):
        VERIFIER.check("POST", URL, headers, b"", now=signed_at + timedelta(minutes=6))
    with pytest.raises(SignatureRefused, match="valid 'X-Amz-Date'"):
        VERIFIER.check("POST", URL, {**headers, "X-Amz-Date": "yesterday"}, b"")
