"""The JSON schemas of the dashboard's answers and decisions, for its routes' operations."""

from __future__ import annotations

from notifier.app.schemas import STATUS
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
        "executionArn": {"type": "string"},
        "name": {"type": "string"},
        "route": {"type": "string"},
        "status": STATUS,
        "startDate": {"type": ["string", "null"], "format": "date-time"},
        "stopDate": {"type": ["string", "null"], "format": "date-time"},
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
