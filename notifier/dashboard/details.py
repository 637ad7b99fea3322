"""One execution in full, for the dashboard: input, process data, result and step history.

Only executions of this daemon's routes are shown (the state machines its credentials are
meant for). Task tokens are removed from everything returned: whoever holds one can decide
for the workflow, and only the approvals API may do that.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from notifier.config import RouteSettings
from notifier.executions import AwsError, Executions

HISTORY_LIMIT = 1000
REDACTED = "(redacted)"


class UnknownExecutionError(Exception):
    pass


async def execution_details(
    executions: Executions, routes: Mapping[str, RouteSettings], execution_arn: str
) -> dict[str, Any]:
    """Raises :class:`UnknownExecutionError` for an execution of no route, or none at all."""
    route, description = await describe_route_execution(executions, routes, execution_arn)
    events, truncated = await executions.history(execution_arn, HISTORY_LIMIT)
    details: dict[str, Any] = {
        "executionArn": execution_arn,
        "name": description.get("name"),
        "route": route,
        "status": description.get("status"),
        "startDate": iso(description.get("startDate")),
        "stopDate": iso(description.get("stopDate")),
        "input": parsed_json(description.get("input")),
        "output": parsed_json(description.get("output")),
        "error": description.get("error"),
        "cause": description.get("cause"),
        "history": [_event(event) for event in events],
        "historyTruncated": truncated,
    }
    if routes[route].input == "sidecar":
        try:
            details["processData"] = await executions.read_process_data(str(description["name"]))
        except (AwsError, ValueError) as exc:
            details["processDataError"] = str(exc)
    redacted: dict[str, Any] = redact(details)
    return redacted


async def describe_route_execution(
    executions: Executions, routes: Mapping[str, RouteSettings], execution_arn: str
) -> tuple[str, dict[str, Any]]:
    """The route and DescribeExecution of an execution of one of the daemon's routes.

    Raises :class:`UnknownExecutionError` for an execution of no route, or none at all.
    """
    route = route_of(routes, execution_arn)
    if route is None:
        raise UnknownExecutionError(f"{execution_arn} is not an execution of this daemon's routes")
    try:
        return route, await executions.describe_shared(execution_arn)
    except AwsError as exc:
        if exc.code == "ExecutionDoesNotExist":
            raise UnknownExecutionError(f"no execution {execution_arn}") from None
        raise


def route_of(routes: Mapping[str, RouteSettings], execution_arn: str) -> str | None:
    machine_prefix = execution_arn.rpartition(":")[0]
    for name, route in routes.items():
        prefix, _, machine = route.state_machine.rpartition(":stateMachine:")
        if machine_prefix == f"{prefix}:execution:{machine}":
            return name
    return None


def redact(value: Any) -> Any:
    """``value`` with every task token replaced, also inside JSON held in strings (which
    are left as they are when they hold none)."""
    if isinstance(value, dict):
        return {
            key: REDACTED if key.lower() == "tasktoken" else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            inner = json.loads(value)
        except json.JSONDecodeError:
            return value
        redacted = redact(inner)
        return value if redacted == inner else json.dumps(redacted)
    return value


def _event(event: dict[str, Any]) -> dict[str, Any]:
    """``{id, previousEventId, timestamp, type, details}``: the event's one
    ``...EventDetails`` member, whatever its type."""
    details = event_details(event)
    return {
        "id": event.get("id"),
        "previousEventId": event.get("previousEventId"),
        "timestamp": iso(event.get("timestamp")),
        "type": event.get("type"),
        "details": details,
    }


def event_details(event: dict[str, Any]) -> Any:
    """A history event's one ``...EventDetails`` member, whatever its type (None without)."""
    return next((v for k, v in event.items() if k.endswith("EventDetails")), None)


def parsed_json(text: Any) -> Any:
    """``text`` parsed as JSON where it is JSON, else as it is."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None
