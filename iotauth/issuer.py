"""Token issuer, behind API Gateway (IAM-authenticated in AWS; an API key on loopback locally).

    POST /tokens/daemon/{subtopic}   a token receiving <topic_root>/<subtopic>/#
    POST /tokens/dashboard           a read-only token receiving <topic_root>/status/#

Answers ``{token, expiresAt, endpoint, port, authorizerName, clientId, topicFilters}``;
connect with username ``<clientId>?x-amz-customauthorizer-name=<authorizerName>``, password
``<token>`` and client id ``<clientId>``. Because the subtopic is in the path, an IAM policy
can say which subtopics a caller may ask for (``execute-api:Invoke`` on
``.../POST/tokens/daemon/<subtopic>``).

Environment: ``TOPIC_ROOT``, ``SIGNING_SECRET_ID``, ``AUTHORIZER_NAME``,
``TOKEN_LIFETIME_SECONDS``, and ``MQTT_ENDPOINT`` (``host:port``; empty means the account's
IoT data endpoint on port 443).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from iotauth.keys import SecretsManagerKeys
from iotauth.tokens import (
    DAEMON,
    DASHBOARD,
    Claims,
    new_client_id,
    sign,
    topic_filters,
    valid_subtopic,
)

DEFAULT_LIFETIME_SECONDS = 3600
IOT_PORT = 443


@dataclass(frozen=True)
class IssuerSettings:
    topic_root: str
    authorizer_name: str
    endpoint: str
    port: int
    lifetime_seconds: int = DEFAULT_LIFETIME_SECONDS


def issue(
    scope: str, subtopic: str | None, key: bytes, settings: IssuerSettings, now: float
) -> dict[str, Any]:
    """A new signed token for ``scope`` (and ``subtopic`` for daemon tokens)."""
    issued_at = int(now)
    claims = Claims(
        scope=scope,
        subtopic=subtopic,
        client_id=new_client_id(scope, subtopic),
        issued_at=issued_at,
        expires_at=issued_at + settings.lifetime_seconds,
    )
    filters = topic_filters(settings.topic_root, scope, subtopic)
    return {
        "token": sign(claims, key),
        "expiresAt": datetime.fromtimestamp(claims.expires_at, UTC).isoformat(),
        "endpoint": settings.endpoint,
        "port": settings.port,
        "authorizerName": settings.authorizer_name,
        "clientId": claims.client_id,
        "topicFilters": filters,
    }


def route(event: dict[str, Any]) -> tuple[str, str | None] | dict[str, Any]:
    """The (scope, subtopic) an API Gateway proxy event asks for, or the error response."""
    if event.get("httpMethod") != "POST":
        return response(405, {"message": "use POST"})
    resource = event.get("resource")
    if resource == "/tokens/dashboard":
        return DASHBOARD, None
    if resource == "/tokens/daemon/{subtopic}":
        subtopic = (event.get("pathParameters") or {}).get("subtopic") or ""
        if not valid_subtopic(subtopic):
            message = "subtopic: 1-64 letters, digits, '-' or '_', and not 'status'"
            return response(400, {"message": message})
        return DAEMON, subtopic
    return response(404, {"message": "no such resource"})


def response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json", "cache-control": "no-store"},
        "body": json.dumps(body),
    }


_keys: SecretsManagerKeys | None = None
_endpoint: str | None = None


def _iot_endpoint() -> tuple[str, int]:
    global _endpoint
    configured = os.environ.get("MQTT_ENDPOINT", "")
    if configured:
        host, _, port = configured.rpartition(":")
        return host, int(port)
    if _endpoint is None:
        import boto3

        described = boto3.client("iot").describe_endpoint(endpointType="iot:Data-ATS")
        _endpoint = str(described["endpointAddress"])
    return _endpoint, IOT_PORT


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _keys
    routed = route(event)
    if isinstance(routed, dict):
        return routed
    if _keys is None:
        _keys = SecretsManagerKeys(os.environ["SIGNING_SECRET_ID"])
    endpoint, port = _iot_endpoint()
    settings = IssuerSettings(
        topic_root=os.environ["TOPIC_ROOT"],
        authorizer_name=os.environ["AUTHORIZER_NAME"],
        endpoint=endpoint,
        port=port,
        lifetime_seconds=int(os.environ.get("TOKEN_LIFETIME_SECONDS", DEFAULT_LIFETIME_SECONDS)),
    )
    scope, subtopic = routed
    issued = issue(scope, subtopic, _keys.ring().current, settings, time.time())
    caller = ((event.get("requestContext") or {}).get("identity") or {}).get("userArn")
    print(json.dumps({"issued": scope, "subtopic": subtopic, "clientId": issued["clientId"],
                      "caller": caller}))  # fmt: skip
    return response(200, issued)
