"""An execution's history as the daemon shows it: a page at a time, each event with its one
details member, and no task token anywhere.

Whoever holds a task token can decide for the workflow, and only the approvals API may do
that, so every execution view (the history route, the dashboard's details and graph)
passes what it shows through :func:`redact`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from notifier.aws.errors import AwsError
from notifier.config import RouteSettings
from notifier.requests.executions import Executions
from notifier.requests.ids import route_of

REDACTED = "(redacted)"


class UnknownExecutionError(Exception):
    pass


async def history_page(
    executions: Executions, arn: str, limit: int, token: str | None
) -> dict[str, Any]:
    """A page of an execution's history, its task tokens removed: ``{executionArn, events,
    nextToken}``. Raises :class:`~notifier.requests.listing.InvalidPageTokenError`, or
    :class:`UnknownExecutionError` when there is no such execution."""
    try:
        events, next_token = await executions.history_page(arn, limit, token)
    except AwsError as exc:
        if exc.code == "ExecutionDoesNotExist":
            raise UnknownExecutionError(arn) from exc
        raise
    page = {
        "executionArn": arn,
        "events": [history_event(event) for event in events],
        "nextToken": next_token,
    }
    redacted: dict[str, Any] = redact(page)
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


def history_event(event: dict[str, Any]) -> dict[str, Any]:
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
