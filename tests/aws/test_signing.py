"""The fast path's SigV4 signer against botocore's own, request by request."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotocoreCredentials

from notifier.aws.signing import Credentials, Scope, SigV4Signer

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
HOST = "states.eu-west-1.amazonaws.com"
BODY = b'{"name": "01JDQ8Z6V3"}'
BODY_SHA256 = hashlib.sha256(BODY).hexdigest()
STEP_FUNCTIONS = Scope("eu-west-1", "states")
S3 = Scope("eu-west-1", "s3")
WHEN = datetime(2026, 12, 7, 1, 2, 3, tzinfo=UTC)
LOCAL = Credentials("AKIDEXAMPLE", SECRET, None)


def botocores(
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    scope: Scope,
    when: datetime,
    credentials: Credentials,
    payload: str | None = None,
) -> str:
    """The Authorization botocore's signer gives the request."""
    request = AWSRequest(method, f"https://{HOST}{path}", data=BODY)
    for name, value in headers:
        request.headers.add_header(name, value)
    theirs = BotocoreCredentials(*credentials)
    if scope.s3:
        signer: SigV4Auth = S3SigV4Auth(theirs, scope.service, scope.region)
        if payload == "UNSIGNED-PAYLOAD":  # as botocore does over HTTPS with a checksum
            request.context.update(
                has_streaming_input=True,
                checksum={"request_algorithm": {"in": "header", "name": "x-amz-checksum-crc32"}},
            )
    else:
        signer = SigV4Auth(theirs, scope.service, scope.region)
    naive = when.astimezone(UTC).replace(tzinfo=None)
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: naive)
    signer.add_auth(request)
    return str(request.headers["Authorization"])


def authorization(signed: list[tuple[str, str]]) -> str:
    return next(value for name, value in signed if name == "Authorization")


def sign(
    scope: Scope = STEP_FUNCTIONS,
    credentials: Credentials = LOCAL,
    when: datetime | None = WHEN,
    headers: tuple[tuple[str, str], ...] = (),
    signer: SigV4Signer | None = None,
    path: str = "/",
) -> list[tuple[str, str]]:
    return (signer or SigV4Signer()).sign(
        "POST", path, [("host", HOST), *headers], BODY_SHA256, scope, credentials, when
    )


@pytest.mark.parametrize(
    ("method", "path", "headers", "scope", "token", "payload"),
    [
        ("POST", "/", [("x-amz-target", "AWSStepFunctions.StartExecution")], STEP_FUNCTIONS,
         None, None),
        ("post", "/", [("Content-Type", "application/x-amz-json-1.0")], STEP_FUNCTIONS,
         "session-token/with+chars=", None),
        # normalized (dot segments, doubled slashes) and encoded once more
        ("POST", "/a/./b/../c//d%20e/", [], STEP_FUNCTIONS, None, None),
        # values trimmed, inner runs of spaces made one, repeated names joined
        ("POST", "/", [("X-Amz-Meta-A", "  one   two "), ("x-amz-meta-a", "three")],
         STEP_FUNCTIONS, None, None),
        # sent, but not signed, as botocore leaves them
        ("POST", "/", [("User-Agent", "notifier"), ("X-Amzn-Trace-Id", "Root=1-a-b")],
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
    credentials = Credentials("AKIDEXAMPLE", SECRET, token)
    ours = SigV4Signer().sign(
        method, path, [("host", HOST), *headers], payload or BODY_SHA256, scope, credentials,
        WHEN,
    )  # fmt: skip
    expected = botocores(monkeypatch, method, path, headers, scope, WHEN, credentials, payload)
    assert authorization(ours) == expected
    names = [name.lower() for name, _ in ours]
    assert ("x-amz-security-token" in names) == (token is not None)
    assert ("x-amz-content-sha256" in names) == scope.s3
    assert set(names) >= {name.lower() for name, _ in headers}  # every header is sent


def test_now_unless_a_date_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    ours = sign(when=None)
    after = datetime.now(UTC)
    date = next(value for name, value in ours if name == "X-Amz-Date")
    signed_at = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert before <= signed_at <= after
    expected = botocores(monkeypatch, "POST", "/", [], STEP_FUNCTIONS, signed_at, LOCAL)
    assert authorization(ours) == expected
    # a given date in another time zone is the same moment
    in_paris = WHEN.astimezone(timezone(timedelta(hours=1)))
    assert authorization(sign(when=in_paris)) == authorization(sign(when=WHEN))


@pytest.mark.parametrize(
    ("when", "scope", "secret"),
    [
        (WHEN + timedelta(days=1), STEP_FUNCTIONS, SECRET),  # the next day
        (WHEN, Scope("us-east-1", "states"), SECRET),  # another region
        (WHEN, Scope("eu-west-1", "sqs"), SECRET),  # another service
        (WHEN, STEP_FUNCTIONS, "rotated" + SECRET),  # new credentials
    ],
)
def test_a_kept_key_is_for_its_day_credentials_and_scope_only(
    when: datetime, scope: Scope, secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    signer = SigV4Signer()
    sign(signer=signer)  # keeps the key of WHEN, STEP_FUNCTIONS and SECRET
    credentials = Credentials("AKIDEXAMPLE", secret, None)
    ours = sign(scope, credentials, when, signer=signer)
    expected = botocores(monkeypatch, "POST", "/", [], scope, when, credentials)
    assert authorization(ours) == expected


def test_keys_kept_are_bounded_and_dropped_keys_made_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signer = SigV4Signer()
    secrets = [f"{n}{SECRET}" for n in range(40)]
    for secret in secrets:
        sign(credentials=Credentials("AKIDEXAMPLE", secret, None), signer=signer)
        assert len(signer._keys) <= 16
    credentials = Credentials("AKIDEXAMPLE", secrets[0], None)
    ours = sign(credentials=credentials, signer=signer)
    expected = botocores(monkeypatch, "POST", "/", [], STEP_FUNCTIONS, WHEN, credentials)
    assert authorization(ours) == expected


@pytest.mark.parametrize(
    ("headers", "path", "when", "message"),
    [
        ((("X-Amz-Date", "20260101T000000Z"),), "/", WHEN, "x-amz-date"),
        ((("authorization", "AWS4-HMAC-SHA256 ..."),), "/", WHEN, "authorization"),
        ((), "/?a=b", WHEN, "query string"),
        ((), "/", WHEN.replace(tzinfo=None), "time zone"),
    ],
)
def test_what_it_cannot_sign_is_refused(
    headers: tuple[tuple[str, str], ...], path: str, when: datetime, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        sign(headers=headers, path=path, when=when)
