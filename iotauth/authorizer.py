"""AWS IoT custom authorizer: checks the token in the MQTT password, returns a least-privilege
IoT policy (connect as the token's client id; subscribe and receive only within its topic
filters: a daemon spreads its completions over several connections, each subscribed to its
own filter below ``<topic_root>/<subtopic>/``, each with a token of its own).

Environment: ``TOPIC_ROOT``, ``SIGNING_SECRET_ID``. The authorizer is created with signing
disabled: the token is the MQTT password, the username carries
``?x-amz-customauthorizer-name=<name>``. The local broker runs this same handler.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from iotauth.keys import SecretsManagerKeys
from iotauth.tokens import Claims, InvalidToken, topic_filters, unverified_key_id, verify

MIN_SESSION_SECONDS = 300
MAX_SESSION_SECONDS = 86400
"""AWS IoT's bounds for disconnectAfterInSeconds and refreshAfterInSeconds."""


@dataclass(frozen=True)
class AuthorizerSettings:
    topic_root: str
    arn_prefix: str
    """``arn:<partition>:iot:<region>:<account>:``, the prefix of every policy resource."""


def iot_arn_prefix(function_arn: str) -> str:
    """The IoT ARN prefix of the account and region a Lambda function runs in."""
    parts = function_arn.split(":")
    if len(parts) < 5 or parts[0] != "arn":
        raise ValueError(f"not an ARN: {function_arn!r}")
    return f"arn:{parts[1]}:iot:{parts[3]}:{parts[4]}:"


def authorize(
    event: Mapping[str, Any],
    keys: Callable[[str | None], Mapping[str, bytes]],
    settings: AuthorizerSettings,
) -> tuple[dict[str, Any], str]:
    """The authorizer's answer to ``event`` and, for the log, why.

    ``keys(kid)`` returns the verification keys by id, given the key id the token names.
    """
    mqtt = (event.get("protocolData") or {}).get("mqtt") or {}
    client_id, password = mqtt.get("clientId"), mqtt.get("password")
    if "mqtt" not in (event.get("protocols") or []) or not password:
        return deny(), "no token (anonymous)"
    try:
        token = base64.b64decode(password, validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return deny(), "password is not a token"
    try:
        claims = verify(token, keys(unverified_key_id(token)))
    except InvalidToken as exc:
        return deny(), str(exc)
    if client_id != claims.client_id:
        return deny(), f"client id {client_id!r} is not the token's"
    seconds = int(claims.expires_at - time.time())
    session = max(MIN_SESSION_SECONDS, min(MAX_SESSION_SECONDS, seconds))
    answer = {
        "isAuthenticated": True,
        "principalId": principal_id(claims),
        "disconnectAfterInSeconds": session,
        "refreshAfterInSeconds": session,
        "policyDocuments": [json.dumps(policy_document(claims, settings))],
    }
    return answer, f"{claims.scope} token for {claims.client_id}"


def policy_document(claims: Claims, settings: AuthorizerSettings) -> dict[str, Any]:
    prefix = settings.arn_prefix
    filters = topic_filters(settings.topic_root, claims.scope, claims.subtopic)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": f"{prefix}client/{claims.client_id}",
            },
            {
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                # A filter's trailing '#' is every topic below it; in a policy that is '*'
                # (which also matches any narrower filter there, such as '<...>/3/+').
                "Resource": [f"{prefix}topicfilter/{f.removesuffix('#')}*" for f in filters],
            },
            {
                "Effect": "Allow",
                "Action": "iot:Receive",
                "Resource": [f"{prefix}topic/{f.removesuffix('#')}*" for f in filters],
            },
        ],
    }


def principal_id(claims: Claims) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", f"{claims.scope}{claims.client_id}")[:128]


def deny() -> dict[str, Any]:
    return {
        "isAuthenticated": False,
        "principalId": "denied",
        "disconnectAfterInSeconds": MIN_SESSION_SECONDS,
        "refreshAfterInSeconds": MIN_SESSION_SECONDS,
        "policyDocuments": [],
    }


_keys: SecretsManagerKeys | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _keys
    if _keys is None:
        _keys = SecretsManagerKeys(os.environ["SIGNING_SECRET_ID"])
    keys = _keys
    settings = AuthorizerSettings(
        topic_root=os.environ["TOPIC_ROOT"],
        arn_prefix=iot_arn_prefix(context.invoked_function_arn),
    )
    answer, reason = authorize(event, lambda kid: keys.ring_knowing(kid).by_id, settings)
    connection = (event.get("connectionMetadata") or {}).get("id")
    allowed = answer["isAuthenticated"]
    print(json.dumps({"allowed": allowed, "reason": reason, "connection": connection}))
    return answer
