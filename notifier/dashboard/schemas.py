"""The JSON schemas of the dashboard's answers and decisions, for its routes' operations."""

from __future__ import annotations

from notifier.app.schemas import ENDING, EXECUTION_FIELDS, PROCESS_DATA
from notifier.dashboard.approval_table import MAX_COMMENT, Decision

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

DETAILS = {
    "type": "object",
    "required": ["executionArn", "status", "history"],
    "additionalProperties": False,
    "properties": {
        **EXECUTION_FIELDS,
        "input": {},
        "output": {},
        **PROCESS_DATA,
        **ENDING,
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
        **EXECUTION_FIELDS,
        **ENDING,
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
                    **ENDING,
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

APPROVAL_LIST = {
    "type": "object",
    "required": ["approvals", "enabled"],
    "properties": {
        "approvals": {"type": "array", "items": {"$ref": "#/components/schemas/Approval"}},
        "enabled": {"type": "boolean"},
    },
}
DECISION = {
    "type": "object",
    "required": ["approved"],
    "properties": {
        "approved": {"type": "boolean"},
        "comment": {"type": "string", "maxLength": MAX_COMMENT},
    },
}
DECIDED = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "decision": {"enum": [str(d) for d in Decision]},
    },
}

LINK_FORM = {
    "type": "object",
    "properties": {"comment": {"type": "string", "maxLength": MAX_COMMENT}},
}
