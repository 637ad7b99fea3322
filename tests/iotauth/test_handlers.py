"""The issuer and the custom authorizer handlers, as pure functions: no AWS, no broker."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest

from iotauth import issuer, tokens
from iotauth.authorizer import AuthorizerSettings, authorize, iot_arn_prefix
from iotauth.keys import KeyRing
from notifier.local.iot_policy import IotPolicy

KEY = b"k" * 64
OLD_KEY = b"o" * 64
FORGED_KEY = b"f" * 64
PREFIX = "arn:aws:iot:us-east-1:123456789012:"
SETTINGS = AuthorizerSettings(topic_root="notifier", arn_prefix=PREFIX)
ISSUER = issuer.IssuerSettings("notifier", "notifier-test-token", "127.0.0.1", 1883)
NOW = float(int(time.time()))
"""Tokens are checked against the clock (PyJWT reads it), so the tests issue them now."""


RING = KeyRing(KEY, OLD_KEY)


def keys(ring: KeyRing = RING) -> Any:
    return lambda kid: ring.by_id


def event(password: str | None, client_id: str, name: str = "notifier-test-token") -> dict:
    mqtt: dict[str, Any] = {
        "username": f"{client_id}?x-amz-customauthorizer-name={name}",
        "clientId": client_id,
    }
    if password is not None:
        mqtt["password"] = base64.b64encode(password.encode()).decode()
    return {
        "signatureVerified": False,
        "protocols": ["mqtt"],
        "protocolData": {"mqtt": mqtt},
        "connectionMetadata": {"id": "c0ffee"},
    }


def daemon_token(subtopic: str = "alpha", key: bytes = KEY, now: float = NOW) -> dict:
    return issuer.issue(tokens.DAEMON, subtopic, key, ISSUER, now)


def connect(issued: dict, client_id: str | None = None) -> tuple[dict, str]:
    return authorize(event(issued["token"], client_id or issued["clientId"]), keys(), SETTINGS)


def policy(answer: dict) -> IotPolicy:
    return IotPolicy.from_documents(answer["policyDocuments"])


def test_daemon_token_grants_its_own_subtopic_only() -> None:
    issued = daemon_token("alpha")
    assert issued["topicFilters"] == ["notifier/alpha/#"]
    assert issued["clientId"].startswith("alpha.")
    answer, _ = connect(issued)
    assert answer["isAuthenticated"] is True
    assert answer["principalId"].isalnum() and len(answer["principalId"]) <= 128
    assert 300 <= answer["disconnectAfterInSeconds"] <= 3600
    assert 300 <= answer["refreshAfterInSeconds"] <= 86400
    granted = policy(answer)
    cid = issued["clientId"]
    assert granted.allows("iot:Connect", f"{PREFIX}client/{cid}")
    assert not granted.allows("iot:Connect", f"{PREFIX}client/someone-else")
    assert granted.allows("iot:Subscribe", f"{PREFIX}topicfilter/notifier/alpha/#")
    # Each connection of the daemon's pool subscribes to its own part of the subtopic.
    for narrower in ("notifier/alpha/+", "notifier/alpha/3/+"):
        assert granted.allows("iot:Subscribe", f"{PREFIX}topicfilter/{narrower}"), narrower
    assert granted.allows("iot:Receive", f"{PREFIX}topic/notifier/alpha/0123")
    assert granted.allows("iot:Receive", f"{PREFIX}topic/notifier/alpha/3/0123")
    outsides = ("notifier/#", "notifier/beta/#", "notifier/+/x", "notifier/status/#", "#",
                "notifier/alphabet/#", "notifier/alpha")  # fmt: skip
    for outside in outsides:
        assert not granted.allows("iot:Subscribe", f"{PREFIX}topicfilter/{outside}"), outside
    assert not granted.allows("iot:Receive", f"{PREFIX}topic/notifier/beta/0123")
    assert not granted.allows("iot:Publish", f"{PREFIX}topic/notifier/alpha/0123")


def test_dashboard_token_receives_status_topics_and_cannot_publish() -> None:
    issued = issuer.issue(tokens.DASHBOARD, None, KEY, ISSUER, NOW)
    assert issued["topicFilters"] == ["notifier/status/#"]
    answer, _ = connect(issued)
    granted = policy(answer)
    assert granted.allows("iot:Subscribe", f"{PREFIX}topicfilter/notifier/status/#")
    assert granted.allows("iot:Receive", f"{PREFIX}topic/notifier/status/abc")
    assert not granted.allows("iot:Subscribe", f"{PREFIX}topicfilter/notifier/alpha/#")
    assert not granted.allows("iot:Publish", f"{PREFIX}topic/notifier/status/abc")
    assert not granted.allows("iot:Publish", f"{PREFIX}topic/notifier/alpha/abc")


def forged(claims: dict, key: bytes = KEY) -> str:
    base = {"scope": "daemon", "sub": "alpha", "cid": "alpha.0123456789ab",
            "iat": int(NOW) - 10, "exp": int(NOW) + 3600}  # fmt: skip
    body = {**base, **claims}
    token = tokens.sign(
        tokens.Claims(body["scope"], body["sub"], body["cid"], body["iat"], body["exp"]), key
    )
    return token


def tamper(token: str, **changes: Any) -> str:
    header, body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(changes)
    encoded = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{encoded}.{signature}"


def unsigned(claims: dict) -> str:
    """A token that says it needs no signature (``alg: none``), naming the real key."""
    header = {"kid": tokens.key_id(KEY)}
    return jwt.encode({**jwt.decode(forged({}), options={"verify_signature": False}), **claims},
                      None, algorithm="none", headers=header)  # fmt: skip


@pytest.mark.parametrize(
    ("password", "client_id", "reason"),
    [
        (None, "alpha.0123456789ab", "anonymous"),
        ("", "alpha.0123456789ab", "anonymous"),
        ("not a token", "alpha.0123456789ab", "not a notifier token"),
        (forged({}, FORGED_KEY), "alpha.0123456789ab", "bad signature"),
        (forged({"exp": int(NOW) - tokens.LEEWAY_SECONDS - 1}), "alpha.0123456789ab", "expired"),
        (forged({"iat": int(NOW) + 3600}), "alpha.0123456789ab", "future"),
        (tamper(forged({}), sub="beta"), "alpha.0123456789ab", "bad signature"),
        (tamper(forged({}), exp=int(NOW) + 10**6), "alpha.0123456789ab", "bad signature"),
        (tamper(forged({}), scope="dashboard", sub=None), "alpha.0123456789ab", "bad signature"),
        (forged({}), "beta.0123456789ab", "client id"),
        (forged({"sub": "status"}), "alpha.0123456789ab", "grants nothing"),
        (forged({"scope": "admin"}), "alpha.0123456789ab", "unknown scope"),
        (forged({"scope": "dashboard", "sub": "alpha"}), "alpha.0123456789ab", "grants nothing"),
        (forged({"sub": "#"}), "alpha.0123456789ab", "grants nothing"),
        (unsigned({}), "alpha.0123456789ab", "malformed token"),
        (forged({"iat": "soon"}), "alpha.0123456789ab", "malformed token"),
    ],
    ids=[
        "anonymous", "empty-password", "garbage", "forged-signature", "expired", "future",
        "tampered-subtopic", "tampered-expiry", "tampered-scope", "wrong-client-id",
        "reserved-subtopic", "unknown-scope", "dashboard-with-subtopic", "wildcard-subtopic",
        "alg-none", "non-numeric-iat",
    ],
)  # fmt: skip
def test_refused(password: str | None, client_id: str, reason: str) -> None:
    answer, why = authorize(event(password, client_id), keys(), SETTINGS)
    assert answer["isAuthenticated"] is False
    assert answer["policyDocuments"] == []
    assert reason in why


def test_previous_key_still_verifies_during_rotation_then_not() -> None:
    issued = daemon_token(key=OLD_KEY)
    answer, _ = connect(issued)
    assert answer["isAuthenticated"] is True
    after_rotation = authorize(
        event(issued["token"], issued["clientId"]), keys(KeyRing(b"n" * 64, KEY)), SETTINGS
    )[0]
    assert after_rotation["isAuthenticated"] is False


def test_session_never_outlives_the_token_by_more_than_iot_minimum() -> None:
    now = time.time()  # not NOW: tokens 30 s from expiry must not expire before they are used
    late, _ = connect(daemon_token(now=now - 3600 + 30))
    assert late["disconnectAfterInSeconds"] == 300  # IoT Core's minimum
    within_leeway, _ = connect(daemon_token(now=now - 3600 - tokens.LEEWAY_SECONDS // 2))
    assert within_leeway["isAuthenticated"] is True
    expired, why = connect(daemon_token(now=now - 3600 - tokens.LEEWAY_SECONDS - 1))
    assert expired["isAuthenticated"] is False and "expired" in why


def test_tokens_are_jwts_with_a_key_id() -> None:
    token = daemon_token("alpha")["token"]
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "HS256", "typ": "JWT", "kid": tokens.key_id(KEY)}
    claims = jwt.decode(token, KEY, algorithms=["HS256"])
    assert set(claims) == {"scope", "sub", "cid", "iat", "exp"} and claims["sub"] == "alpha"
    dashboard = issuer.issue(tokens.DASHBOARD, None, KEY, ISSUER, NOW)["token"]
    assert "sub" not in jwt.decode(dashboard, KEY, algorithms=["HS256"])


def test_issuer_routes_api_gateway_proxy_events() -> None:
    def proxy(resource: str, method: str = "POST", subtopic: str | None = None) -> Any:
        params = {"subtopic": subtopic} if subtopic is not None else None
        return issuer.route({"resource": resource, "httpMethod": method, "pathParameters": params})

    assert proxy("/tokens/daemon/{subtopic}", subtopic="alpha") == ("daemon", "alpha")
    assert proxy("/tokens/dashboard") == ("dashboard", None)
    assert proxy("/tokens/daemon/{subtopic}", subtopic="status")["statusCode"] == 400
    assert proxy("/tokens/daemon/{subtopic}", subtopic="a/b")["statusCode"] == 400
    assert proxy("/tokens/dashboard", method="GET")["statusCode"] == 405
    assert proxy("/tokens/admin")["statusCode"] == 404


def test_iot_arn_prefix_from_the_function_arn() -> None:
    arn = "arn:aws-cn:lambda:cn-north-1:123456789012:function:notifier-x-authorizer"
    assert iot_arn_prefix(arn) == "arn:aws-cn:iot:cn-north-1:123456789012:"


def test_issued_tokens_expire_after_the_lifetime() -> None:
    issued = daemon_token(now=time.time())
    claims = tokens.verify(issued["token"], KeyRing(KEY).by_id)
    assert claims.expires_at - claims.issued_at == issuer.DEFAULT_LIFETIME_SECONDS
