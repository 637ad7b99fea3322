"""The OpenAPI 3.1 document of the daemon's HTTP API, served at ``/openapi.json``.

Built from the running configuration, so the route names it lists are the ones served, and
from the patterns, enums and limits the daemon validates with, imported from where they are
defined. Tests compare it with the application's router and check real answers of every
route against it, and a fuzz run checks the API against it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, get_args, get_type_hints

from notifier import __version__
from notifier.apikeys import HEADER as API_KEY_HEADER
from notifier.app.preferences import PREFER_PATTERN
from notifier.config import DaemonSettings, MqttSettings
from notifier.dashboard.approvals import MAX_COMMENT, Decision
from notifier.executions import LIST_STATUSES, MAX_LIST_LIMIT
from notifier.idempotency import HEADER as IDEMPOTENCY_HEADER
from notifier.idempotency import KEY_PATTERN, MAX_KEY_LENGTH
from notifier.ids import TXN_ID_PATTERN
from notifier.waiters import Status

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
        "processData": {"description": "The S3 process data (sidecar routes)"},
        "processDataError": {
            "type": "string",
            "description": "why the process data could not be read (sidecar routes)",
        },
        "location": {"type": "string", "description": "where to re-attach (RUNNING)"},
        "message": {"type": "string"},
        "error": {"type": ["string", "null"]},
        "cause": {"type": ["string", "null"]},
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


def _json(schema_ref: str, description: str, headers: Iterable[str] = ()) -> dict[str, Any]:
    """A JSON answer of schema ``schema_ref``, or of any of ``A|B``."""
    refs = [{"$ref": f"#/components/schemas/{name}"} for name in schema_ref.split("|")]
    schema = refs[0] if len(refs) == 1 else {"anyOf": refs}
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = {name: {"schema": {"type": "string"}} for name in headers}
    return response


def _error(description: str, *headers: str) -> dict[str, Any]:
    return _json("Error", description, headers)


def _answers() -> dict[str, Any]:
    return {
        "200": _json("Answer", "SUCCEEDED"),
        "202": _json("Answer", "still running", ["Location", "Retry-After"]),
        "409": _json("Answer", "ABORTED"),
        "502": _json("Answer|Error", "FAILED, or an AWS error (then an Error with awsErrorCode)"),
        "504": _json("Answer", "TIMED_OUT"),
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


def _idempotency_key(required: bool, description: str) -> dict[str, Any]:
    return {
        "name": IDEMPOTENCY_HEADER,
        "in": "header",
        "required": required,
        "schema": {"type": "string", "pattern": KEY_PATTERN},
        "description": f'{description} A Structured Field string ("order-42") or a bare '
        f"token; 1 to {MAX_KEY_LENGTH} visible ASCII characters. Keys are per route and, "
        "when API keys are required, per API key.",
    }


EXECUTION_ITEM = {
    "type": "object",
    "required": ["executionArn", "name", "transactionId", "route", "status"],
    "additionalProperties": False,
    "properties": {
        "executionArn": {"type": "string"},
        "name": {"type": "string"},
        "transactionId": {
            "anyOf": [TXN_ID, {"type": "null"}],
            "description": "null for an execution not started through this API",
        },
        "route": {"type": "string"},
        "status": STATUS,
        "startDate": {"type": ["string", "null"], "format": "date-time"},
        "stopDate": {"type": ["string", "null"], "format": "date-time"},
    },
}
EXECUTION_LIST = {
    "type": "object",
    "required": ["executions", "nextToken"],
    "additionalProperties": False,
    "properties": {
        "executions": {"type": "array", "items": {"$ref": "#/components/schemas/Execution"}},
        "nextToken": {
            "type": ["string", "null"],
            "description": "pass it as nextToken for the next page; null on the last one",
        },
    },
}


APPROVAL = {
    "type": "object",
    "required": ["id", "executionArn", "executionName", "requestedAt"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "executionArn": {"type": "string"},
        "executionName": {"type": "string"},
        "file": {"description": "What the workflow asks about"},
        "requestedAt": {"type": "string", "format": "date-time"},
    },
}

EXECUTION_HEAD = {
    "executionArn": {"type": "string"},
    "name": {"type": "string"},
    "route": {"type": "string"},
    "status": STATUS,
    "startDate": {"type": ["string", "null"], "format": "date-time"},
    "stopDate": {"type": ["string", "null"], "format": "date-time"},
}
"""What the dashboard's views of one execution begin with."""
DETAILS = {
    "type": "object",
    "required": ["executionArn", "status", "history"],
    "additionalProperties": False,
    "properties": {
        **EXECUTION_HEAD,
        "input": {},
        "output": {},
        "processData": {"description": "The S3 process data (sidecar routes)"},
        "processDataError": {"type": "string"},
        "error": {"type": ["string", "null"]},
        "cause": {"type": ["string", "null"]},
        "history": {
            "type": "array",
            "description": "GetExecutionHistory events: id, previousEventId, timestamp, type, "
            "and the event's details (task tokens redacted)",
            "items": {"type": "object"},
        },
        "historyTruncated": {"type": "boolean"},
    },
}


GRAPH = {
    "type": "object",
    "required": ["executionArn", "status", "definition", "states"],
    "additionalProperties": False,
    "properties": {
        **EXECUTION_HEAD,
        "error": {"type": ["string", "null"]},
        "cause": {"type": ["string", "null"]},
        "definition": {"type": "object", "description": "The state machine definition it runs"},
        "states": {
            "type": "object",
            "description": "Each state the execution reached, by name",
            "additionalProperties": {
                "type": "object",
                "required": ["status"],
                "properties": {
                    "status": {"enum": ["running", "waiting", "succeeded", "caught", "failed"]},
                    "input": {},
                    "output": {},
                    "error": {"type": ["string", "null"]},
                    "cause": {"type": ["string", "null"]},
                },
            },
        },
        "historyTruncated": {"type": "boolean"},
    },
}
STATS = {
    "type": "object",
    "required": ["held", "maxHeld", "completions", "latencyBuckets", "latency"],
    "additionalProperties": False,
    "properties": {
        "held": {"type": "number"},
        "maxHeld": {"type": "integer"},
        "completions": {
            "type": "object",
            "description": "Completions so far, by path",
            "additionalProperties": {"type": "number"},
        },
        "latencyBuckets": {"type": "array", "items": {"type": "number"}},
        "latency": {
            "type": "object",
            "description": "By path: cumulative counts of added latency per bucket",
            "additionalProperties": {"type": "array", "items": {"type": "number"}},
        },
    },
}


EXECUTION_ID = {
    "name": "executionId",
    "in": "path",
    "required": True,
    "description": "A transaction id or an execution ARN",
    "schema": {"type": "string"},
}
NOT_JSON = _error("a body not sent as Content-Type: application/json")
FOREIGN_ORIGIN = _error(
    "sent from another origin's page, or, to a daemon on loopback, to a name that is not"
)


def _keyed() -> dict[str, Any]:
    """The answers of a route that needs an API key when keys are required."""
    return {
        "401": _error("missing or unknown API key"),
        "429": _error("over the API key's rate", "Retry-After"),
    }


def _dashboard_paths(security: list[dict[str, Any]]) -> dict[str, Any]:
    keyed = _keyed()
    return {
        "/": {
            "get": {
                "summary": "The dashboard page",
                "operationId": "dashboard",
                "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}},
            }
        },
        "/events": {
            "get": {
                "summary": "The dashboard's Server-Sent Events: hello, snapshot, execution, "
                "approvals",
                "operationId": "events",
                "security": security,
                "responses": {
                    "200": {
                        "description": "an endless stream",
                        "content": {"text/event-stream": {}},
                    }
                }
                | keyed,
            }
        },
        "/dashboard/details": {
            "get": {
                "summary": "One execution of a route: input, process data, result and steps",
                "operationId": "details",
                "security": security,
                "parameters": [
                    {"name": "arn", "in": "query", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": _json("Details", "the execution"),
                    "400": _error("no arn"),
                    "404": _error("no such execution, or not one of a route"),
                    "502": _error("AWS error"),
                    "503": _error("AWS is throttling", "Retry-After"),
                }
                | keyed,
            }
        },
        "/dashboard/executions/{executionId}": {
            "get": {
                "summary": "The page of one execution, with its graph",
                "operationId": "executionPage",
                "parameters": [EXECUTION_ID],
                "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}},
            }
        },
        "/dashboard/executions/{executionId}/graph": {
            "get": {
                "summary": "One execution's definition and what each of its states did",
                "operationId": "executionGraph",
                "security": security,
                "parameters": [EXECUTION_ID],
                "responses": {
                    "200": _json("Graph", "the execution"),
                    "404": _error("no such execution, or not one of a route"),
                    "502": _error("AWS error"),
                    "503": _error("AWS is throttling", "Retry-After"),
                }
                | keyed,
            }
        },
        "/dashboard/stats": {
            "get": {
                "summary": "The counters behind the dashboard's charts",
                "operationId": "stats",
                "security": security,
                "responses": {"200": _json("Stats", "the daemon's counters")} | keyed,
            }
        },
        "/approvals": {
            "get": {
                "summary": "Pending human approvals, oldest first",
                "operationId": "approvals",
                "security": security,
                "responses": {
                    "200": {
                        "description": "enabled says whether an approval queue is configured",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["approvals", "enabled"],
                                    "properties": {
                                        "approvals": {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Approval"},
                                        },
                                        "enabled": {"type": "boolean"},
                                    },
                                }
                            }
                        },
                    }
                }
                | keyed,
            }
        },
        "/approvals/{approvalId}": {
            "post": {
                "summary": "Decide: SendTaskSuccess (approved) or SendTaskFailure (rejected)",
                "operationId": "decide",
                "security": security,
                "parameters": [
                    {
                        "name": "approvalId",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["approved"],
                                "properties": {
                                    "approved": {"type": "boolean"},
                                    "comment": {"type": "string", "maxLength": MAX_COMMENT},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "decided",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "id": {"type": "string"},
                                        "decision": {"enum": [str(d) for d in Decision]},
                                    },
                                }
                            }
                        },
                    },
                    "400": _error("the body is not a decision"),
                    "415": NOT_JSON,
                    "404": _error("no such pending approval, or no approval queue"),
                    "409": _error("already decided, or the execution no longer waits"),
                    "413": _error("body too large"),
                    "502": _error("AWS error"),
                    "503": _error("AWS is throttling", "Retry-After"),
                }
                | keyed,
            }
        },
    }


def document(routes: Iterable[str], api_keys_required: bool, dashboard: bool) -> dict[str, Any]:
    security: list[dict[str, Any]] = [{"apiKey": []}] if api_keys_required else []
    route_names = sorted(routes)
    start: dict[str, Any] = {
        "summary": "Start the route's workflow and hold the request until it ends",
        "operationId": "start",
        "security": security,
        "parameters": [
            {
                "name": "route",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "enum": route_names},
            },
            PREFER,
            _idempotency_key(
                False,
                "Makes the request safe to retry, at this or any other instance: the same key "
                "and body give the same transaction (held, or its final answer), never a "
                "second execution.",
            ),
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        "responses": _answers()
        | {
            "400": _error(
                "the body is not a JSON object (as RFC 8259 has it: no NaN or Infinity, no "
                "lone surrogate, no integer over 4,300 digits), or nested deeper than 64 "
                "levels; or a malformed Idempotency-Key"
            ),
            "401": _error("missing or unknown API key"),
            "404": _error("unknown route"),
            "413": _error("body too large"),
            "422": _error("the Idempotency-Key was used with another body (transactionId)"),
            "415": NOT_JSON,
            "429": _error("over the API key's rate", "Retry-After"),
            "503": _error(
                "too many held requests, draining, AWS throttling or the DescribeExecution "
                "rate limit reached",
                "Retry-After",
            ),
        },
    }
    lookup: dict[str, Any] = {
        "summary": "Re-attach to the transaction an Idempotency-Key started on this route",
        "operationId": "reattachByKey",
        "security": security,
        "parameters": [
            start["parameters"][0],
            _idempotency_key(True, "The key the transaction was started with."),
            WAIT_QUERY,
        ],
        "responses": _answers()
        | {
            "400": _error("no or a malformed Idempotency-Key, or a bad wait"),
            "404": _error("unknown route, or no transaction with that key"),
            "503": _error(
                "too many re-attached requests held, draining, AWS throttling or the "
                "DescribeExecution rate limit reached",
                "Retry-After",
            ),
        }
        | _keyed(),
    }
    txn_param = {
        "name": "txnId",
        "in": "path",
        "required": True,
        "schema": {"anyOf": [TXN_ID, EXECUTION_ARN]},
        "description": "the transaction id, or its execution ARN",
    }
    listing: dict[str, Any] = {
        "summary": "The routes' executions (ListExecutions), a page at a time",
        "operationId": "listExecutions",
        "security": security,
        "parameters": [
            {
                "name": "route",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": route_names},
                "description": "only this route's (default: every route, one after the other)",
            },
            {
                "name": "status",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": list(LIST_STATUSES)},
            },
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT},
                "description": "executions per page (default 100)",
            },
            {
                "name": "nextToken",
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": "the nextToken of the previous page",
            },
        ],
        "responses": {
            "200": _json("ExecutionList", "newest first within each route"),
            "400": _error("a bad status, limit or nextToken"),
            "404": _error("unknown route"),
            "502": _error("AWS error"),
            "503": _error("AWS is throttling", "Retry-After"),
        }
        | _keyed(),
    }
    keyed = _keyed()
    described: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "notifier",
            "version": __version__,
            "description": "AWS Step Functions workflows as synchronous HTTP calls.",
        },
        "paths": {
            "/{route}": {"post": start, "get": lookup},
            "/executions": {"get": listing},
            "/executions/{txnId}": {
                "get": {
                    "summary": "Re-attach to a transaction from any instance: its final answer, "
                    "or 202 after wait",
                    "operationId": "reattach",
                    "security": security,
                    "parameters": [txn_param, WAIT_QUERY],
                    "responses": _answers()
                    | {
                        "400": _error("bad wait"),
                        "404": _error("no such transaction"),
                        "503": _error(
                            "too many re-attached requests held, draining, AWS throttling or "
                            "the DescribeExecution rate limit reached",
                            "Retry-After",
                        ),
                    }
                    | keyed,
                }
            },
            "/executions/{txnId}/stop": {
                "post": {
                    "summary": "Stop the execution; requests held for it are answered 409",
                    "operationId": "stop",
                    "security": security,
                    "parameters": [txn_param],
                    "responses": {
                        "200": _json("Answer", "stopped"),
                        "401": _error("missing or unknown API key"),
                        "404": _error("no such transaction"),
                        "409": _error("the execution had already ended (status says how)"),
                        "415": NOT_JSON,
                        "429": _error("over the API key's rate", "Retry-After"),
                        "502": _error("AWS error"),
                        "503": _error("AWS is throttling", "Retry-After"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "The process is alive",
                    "operationId": "healthz",
                    "responses": {"200": _json("Health", "alive")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Whether the daemon can serve, and how",
                    "operationId": "readyz",
                    "responses": {
                        "200": _json(
                            "Readiness",
                            "ready, or degraded (MQTT down or not delivering, "
                            "the fallbacks answer)",
                        ),
                        "503": _json("Readiness", "not ready (the body says why)"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "operationId": "metrics",
                    "security": security,
                    "responses": {
                        "200": {
                            "description": "text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    }
                    | keyed,
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "security": security,
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    }
                    | keyed,
                }
            },
        }
        | (_dashboard_paths(security) if dashboard else {}),
        "components": {
            "schemas": {
                "Answer": ANSWER,
                "Error": ERROR,
                "Health": HEALTH,
                "Readiness": READINESS,
                "Approval": APPROVAL,
                "Details": DETAILS,
                "Graph": GRAPH,
                "Stats": STATS,
                "Execution": EXECUTION_ITEM,
                "ExecutionList": EXECUTION_LIST,
            },
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}
            },
        },
    }
    for operations in described["paths"].values():
        for operation in operations.values():
            if not api_keys_required:  # then another site's page is refused by its Origin
                operation["responses"]["403"] = FOREIGN_ORIGIN
            elif operation["operationId"] in NEEDS_ROLE:
                operation["responses"]["403"] = _error(NEEDS_ROLE[operation["operationId"]])
            if api_keys_required and operation["operationId"] in HELD:
                operation["responses"]["429"] = _error(
                    "over the API key's rate, or it holds its max_held requests", "Retry-After"
                )
    return described


# With keys required: the operations a key needs a role for, and those it holds requests in.
NEEDS_ROLE = {
    "events": "the API key is not an admin",
    "details": "the API key is not an admin",
    "executionGraph": "the API key is not an admin",
    "stats": "the API key is not an admin",
    "metrics": "the API key is not an admin",
    "approvals": "the API key is neither an approver nor an admin",
    "decide": "the API key is not an approver, or its own key started the execution",
}
HELD = ("start", "reattach", "reattachByKey")
