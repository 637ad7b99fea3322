"""The JSON schemas of the HTTP API's answers, and the parameters its operations share.

Written from the patterns, enums and limits the daemon validates with, imported from where
they are defined. The route table (:mod:`notifier.routes`) names them in its operations;
:mod:`notifier.app.openapi` puts them in the document.
"""

from __future__ import annotations

from typing import Any, get_args, get_type_hints

from notifier.app.preferences import PREFER_PATTERN
from notifier.config import DaemonSettings, MqttSettings
from notifier.requests.idempotency import HEADER as IDEMPOTENCY_HEADER
from notifier.requests.idempotency import KEY_PATTERN, MAX_KEY_LENGTH
from notifier.requests.ids import TXN_ID_PATTERN
from notifier.requests.listing import LIST_STATUSES, MAX_LIST_LIMIT
from notifier.requests.waiters import Status

TXN_ID = {
    "type": "string",
    "pattern": f"^{TXN_ID_PATTERN}$",
    "description": "a ULID, or for a transaction started with an Idempotency-Key, K and 25 "
    "characters derived from the route, the API key's name and the key",
}
EXECUTION_ARN = {
    "type": "string",
    "pattern": f"^arn:aws[a-z-]*:states:[a-z0-9-]+:[0-9]{{12}}:execution:[A-Za-z0-9_-]+:"
    f"{TXN_ID_PATTERN}$",
    "description": "the execution ARN of a transaction of one of the routes",
}
STATUS = {"type": "string", "enum": [str(status) for status in Status]}
EXECUTION_FIELDS = {
    "executionArn": {"type": "string"},
    "name": {"type": "string"},
    "route": {"type": "string"},
    "status": STATUS,
    "startDate": {"type": ["string", "null"], "format": "date-time"},
    "stopDate": {"type": ["string", "null"], "format": "date-time"},
}
"""What every view of one execution begins with (a listing's items, the dashboard's)."""
ENDING = {"error": {"type": ["string", "null"]}, "cause": {"type": ["string", "null"]}}
"""How an execution or a state failed: its error and cause."""
PROCESS_DATA = {
    "processData": {"description": "The S3 process data (sidecar routes)"},
    "processDataError": {
        "type": "string",
        "description": "why the process data could not be read (sidecar routes)",
    },
}
NEXT_TOKEN = {
    "type": ["string", "null"],
    "description": "pass it as nextToken for the next page; null on the last one",
}

ERROR = {
    "type": "object",
    "required": ["message"],
    "additionalProperties": False,
    "properties": {
        "message": {"type": "string"},
        "awsErrorCode": {"type": "string"},
        "transactionId": TXN_ID,
        "status": STATUS,
        "decision": {"type": "string", "description": "how an approval was already decided"},
        "start": {
            "type": "object",
            "description": "the request that starts a route (a GET of it without a key)",
            "properties": {
                "method": {"const": "POST"},
                "path": {"type": "string"},
                "defaultInput": {"type": ["object", "null"]},
            },
        },
    },
}

TIMINGS = {
    "type": "object",
    "additionalProperties": False,
    "description": "ISO 8601 UTC times. receivedAt, startedAt, notifiedAt and answeredAt are "
    "the daemon's clock; stoppedAt is the workflow's (AWS's) time of finishing.",
    "properties": {
        name: {"type": ["string", "null"], "format": "date-time"}
        for name in ("receivedAt", "startedAt", "notifiedAt", "answeredAt", "stoppedAt")
    }
    | {"durationsMs": {"type": "object", "additionalProperties": {"type": ["number", "null"]}}},
}


ANSWER = {
    "type": "object",
    "required": ["transactionId", "executionArn", "status"],
    "additionalProperties": False,
    "properties": {
        "transactionId": TXN_ID,
        "executionArn": {"type": ["string", "null"]},
        "status": STATUS,
        "output": {"description": "The workflow's output (SUCCEEDED)"},
        **PROCESS_DATA,
        "location": {"type": "string", "description": "where to re-attach (RUNNING)"},
        "message": {"type": "string"},
        **ENDING,
        "completedVia": {"type": "string", "description": "mqtt, sqs, poll or stop"},
        "timings": TIMINGS,
    },
}

HEALTH = {
    "type": "object",
    "required": ["status"],
    "additionalProperties": False,
    "properties": {"status": {"const": "ok"}},
}

MQTT_CONNECTION_DETAILS: dict[str, Any] = {
    "index": {"type": "integer"},
    "subtopic": {"type": "string"},
    "clientId": {"type": "string"},
    "connected": {"type": "boolean"},
    "startedLastSecond": {"type": "integer", "description": "executions given it in 1 s"},
    "held": {"type": "integer"},
    "received": {"type": "integer"},
    "ignored": {"type": "integer"},
    "duplicated": {"type": "integer"},
    "peakMessagesPerSecond": {"type": "integer", "description": "its busiest second"},
}
READINESS = {
    "type": "object",
    "description": "With API keys required, everything but ready and state only with a valid key",
    "required": ["ready", "state"],
    "additionalProperties": False,
    "properties": {
        "ready": {"type": "boolean"},
        "state": {"enum": ["ready", "degraded", "not ready"]},
        "instanceId": {"type": "string"},
        "completion": {"enum": list(get_args(get_type_hints(DaemonSettings)["completion"]))},
        "accepting": {"type": "boolean", "description": "false while draining"},
        "awsReachable": {"type": "boolean"},
        "awsError": {"type": ["string", "null"]},
        "mqttTransport": {
            "enum": [*get_args(get_type_hints(MqttSettings)["transport"]), None],
            "description": "null when polling",
        },
        "mqttConnected": {"type": ["boolean", "null"], "description": "null when polling"},
        "mqttAuthError": {"type": ["string", "null"]},
        "mqttTokenRefreshes": {"type": ["integer", "null"]},
        "mqttConnections": {
            "type": ["integer", "null"],
            "description": "MQTT connections open for completions (or opening); null when polling",
        },
        "mqttConnectionsMax": {
            "type": ["integer", "null"],
            "description": "the most the configured peak completion rate may open",
        },
        "mqttConnectionDetails": {
            "type": ["array", "null"],
            "description": "each open MQTT connection (docs/mqtt-connections.md)",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": list(MQTT_CONNECTION_DETAILS),
                "properties": MQTT_CONNECTION_DETAILS,
            },
        },
        "mqttProblem": {
            "type": ["string", "null"],
            "description": "why MQTT is taken not to deliver although connected; null when it does",
        },
        "mqttMissed": {
            "type": ["integer", "null"],
            "description": "completions MQTT should have delivered and did not; null when polling",
        },
        "sqsQueue": {"type": ["string", "null"], "description": "null without a queue"},
        "sqsError": {"type": ["string", "null"]},
        "held": {"type": "integer", "description": "requests held right now"},
    },
}


EXECUTION_ITEM = {
    "type": "object",
    "required": ["executionArn", "name", "transactionId", "route", "status"],
    "additionalProperties": False,
    "properties": {
        **EXECUTION_FIELDS,
        "transactionId": {
            "anyOf": [TXN_ID, {"type": "null"}],
            "description": "null for an execution not started through this API",
        },
    },
}
EXECUTION_LIST = {
    "type": "object",
    "required": ["executions", "nextToken"],
    "additionalProperties": False,
    "properties": {
        "executions": {"type": "array", "items": {"$ref": "#/components/schemas/Execution"}},
        "nextToken": NEXT_TOKEN,
    },
}


WAIT_QUERY = {
    "name": "wait",
    "in": "query",
    "required": False,
    "schema": {"type": "number", "minimum": 0},
    "description": "Seconds to hold the request (capped by the configured max_wait)",
}
PREFER = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": PREFER_PATTERN},
    "description": "RFC 7240. wait=N (N may have decimals): seconds to hold the request "
    "(capped by max_wait); respond-async: 202 with the Location as soon as the execution "
    "started (with wait=N too: after up to N seconds)",
}


def idempotency_key(required: bool, description: str) -> dict[str, Any]:
    return {
        "name": IDEMPOTENCY_HEADER,
        "in": "header",
        "required": required,
        "schema": {"type": "string", "pattern": KEY_PATTERN},
        "description": f'{description} A Structured Field string ("order-42") or a bare '
        f"token; 1 to {MAX_KEY_LENGTH} visible ASCII characters. Keys are per route and, "
        "when API keys are required, per API key.",
    }


ROUTE_NAME = {"$ref": "#/components/schemas/RouteName"}
"""A route's name: the document lists the configured ones (``RouteName``)."""
ROUTE_PATH = {"name": "route", "in": "path", "required": True, "schema": ROUTE_NAME}
TRANSACTION_PATH = {
    "name": "txnId",
    "in": "path",
    "required": True,
    "schema": {"anyOf": [TXN_ID, EXECUTION_ARN]},
    "description": "the transaction id, or its execution ARN",
}


def page_query(items: str) -> list[dict[str, Any]]:
    """``limit`` and ``nextToken``: a listing a page at a time."""
    return [
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT},
            "description": f"{items} per page (default 100)",
        },
        {
            "name": "nextToken",
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": "the nextToken of the previous page",
        },
    ]


LIST_QUERY = [
    {
        "name": "route",
        "in": "query",
        "required": False,
        "schema": ROUTE_NAME,
        "description": "only this route's (default: every route, one after the other)",
    },
    {
        "name": "status",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": list(LIST_STATUSES)},
    },
    *page_query("executions"),
]
HISTORY_PAGE = {
    "type": "object",
    "required": ["transactionId", "executionArn", "events", "nextToken"],
    "additionalProperties": False,
    "properties": {
        "transactionId": TXN_ID,
        "executionArn": {"type": "string"},
        "events": {
            "type": "array",
            "items": {
                "type": "object",
                "description": "a GetExecutionHistory event; task tokens are redacted",
                "properties": {
                    "id": {"type": "integer"},
                    "previousEventId": {"type": ["integer", "null"]},
                    "timestamp": {"type": ["string", "null"], "format": "date-time"},
                    "type": {"type": "string"},
                    "details": {"description": "the event's ...EventDetails member"},
                },
            },
        },
        "nextToken": NEXT_TOKEN,
    },
}

SCHEMAS = {
    "Answer": ANSWER,
    "Error": ERROR,
    "Health": HEALTH,
    "Readiness": READINESS,
    "Execution": EXECUTION_ITEM,
    "ExecutionList": EXECUTION_LIST,
}
"""The components every document has; a route's own are in its operation."""
