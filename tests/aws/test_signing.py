"""The fast path's SigV4 signer against botocore's own, request by request."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from notifier.aws.signing import Scope, SigV4Signer

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
HOST = "states.eu-west-1.amazonaws.com"
BODY = b'{"name": "01JDQ8Z6V3"}'


def botocores(
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    scope: Scope,
    when: datetime,
    token: str | None,
    payload: str | None = None,
    monkeypatch: pytest.MonkeyPatch | None = None,
) -> str:
    """The Authorization botocore's signer gives the request."""
    request = AWSRequest(method, f"https://{HOST}{path}", data=BODY)
    for name, value in headers:
        request.headers.add_header(name, value)
    credentials = Credentials("AKIDEXAMPLE", SECRET, token)
    if scope.payload_header:
        signer: SigV4Auth = S3SigV4Auth(credentials, scope.service, scope.region)
        if payload == "UNSIGNED-PAYLOAD":  # as botocore does over HTTPS with a checksum
            request.context.update(
                has_streaming_input=True,
                checksum={"request_algorithm": {"in": "header", "name": "x-amz-checksum-crc32"}},
            )
    else:
        signer = SigV4Auth(credentials, scope.service, scope.region)
    assert monkeypatch is not None
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: when.replace(tzinfo=None))
    signer.add_auth(request)
    return str(request.headers["Authorization"])


def authorization(signed: list[tuple[str, str]]) -> str:
    return next(value for name, value in signed if name == "Authorization")


STEP_FUNCTIONS = Scope("eu-west-1", "states")
S3 = Scope("eu-west-1", "s3", normalize_path=False, payload_header=True)
WHEN = datetime(2026, 12, 7, 1, 2, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    ("method", "path", "headers", "scope", "token", "payload"),
    [
        ("POST", "/", [("x-amz-target", "AWSStepFunctions.StartExecution")], STEP_FUNCTIONS,
         None, None),
        ("POST", "/", [("Content-Type", "application/x-amz-json-1.0")], STEP_FUNCTIONS,
         "session-token/with+chars=", None),
        # normalized (dot segments, doubled slashes) and encoded once more
        ("POST", "/a/./b/../c//d%20e/", [], STEP_FUNCTIONS, None, None),
        # values trimmed, inner runs of spaces made one, repeated names joined
        ("POST", "/", [("X-Amz-Meta-A", "  one   two "), ("x-amz-meta-a", "three")],
         STEP_FUNCTIONS, None, None),
        ("PUT", "/bucket/data/a%20b/../c", [("x-amz-meta-notifier-route", "p1")], S3, "t", None),
        ("PUT", "/bucket/key", [("x-amz-checksum-crc32", "AAAAAA==")], S3, None,
         "UNSIGNED-PAYLOAD"),
    ],
)  # fmt: skip
def test_the_signature_is_botocores(
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    scope: Scope,
    token: str | None,
    payload: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signed_payload = payload or hashlib.sha256(BODY).hexdigest()
    ours = SigV4Signer().sign(
        method, path, [("host", HOST), *headers], signed_payload, scope,
        ("AKIDEXAMPLE", SECRET, token), WHEN,
    )  # fmt: skip
    expected = botocores(method, path, headers, scope, WHEN, token, payload, monkeypatch)
    assert authorization(ours) == expected
    names = {name.lower() for name, _ in ours}
    assert ("x-amz-security-token" in names) == (token is not None)
    assert ("x-amz-content-sha256" in names) == scope.payload_header


def test_a_kept_key_is_for_its_day_and_credentials_only(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = SigV4Signer()
    for when, secret in (
        (WHEN, SECRET),
        (WHEN.replace(day=8), SECRET),  # the next day
        (WHEN.replace(day=8, hour=23), "rotated" + SECRET),  # new credentials
        (WHEN, SECRET),  # the first again
    ):
        ours = signer.sign(
            "POST", "/", [("host", HOST)], hashlib.sha256(BODY).hexdigest(), STEP_FUNCTIONS,
            ("AKIDEXAMPLE", secret, None), when,
        )  # fmt: skip
        request = AWSRequest("POST", f"https://{HOST}/", data=BODY)
        naive = when.replace(tzinfo=None)
        monkeypatch.setattr("botocore.auth.get_current_datetime", lambda naive=naive: naive)
        SigV4Auth(Credentials("AKIDEXAMPLE", secret), "states", "eu-west-1").add_auth(request)
        assert authorization(ours) == request.headers["Authorization"]
