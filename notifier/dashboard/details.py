"""One execution in full, for the dashboard: input, process data, result and step history.

Only executions of this daemon's routes are shown (the state machines its credentials are
meant for). Task tokens are removed from everything returned: whoever holds one can decide
for the workflow, and only the approvals API may do that.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from notifier.aws.errors import AwsError
from notifier.config import RouteSettings
from notifier.requests.executions import Executions
from notifier.requests.history import (
    describe_route_execution,
    history_event,
    iso,
    parsed_json,
    redact,
)

HISTORY_LIMIT = 1000


async def execution_details(
    executions: Executions, routes: Mapping[str, RouteSettings], execution_arn: str
) -> dict[str, Any]:
    """Raises :class:`~notifier.requests.history.UnknownExecutionError` for an execution of
    no route, or none at all."""
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
        "history": [history_event(event) for event in events],
        "historyTruncated": truncated,
    }
    if routes[route].input == "sidecar":
        try:
            details["processData"] = await executions.process_data.read(str(description["name"]))
        except (AwsError, ValueError) as exc:
            details["processDataError"] = str(exc)
    redacted: dict[str, Any] = redact(details)
    return redacted
