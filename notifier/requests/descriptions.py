"""What Step Functions tells of an execution, read without asking it: the ARN an execution
of a name has, the completion a DescribeExecution answer holds, and whether the events of
its history show a publish to a topic."""

from __future__ import annotations

import json
from typing import Any

from notifier.requests.waiters import Completion, Status

UNNOTIFIED_KEYS = frozenset({"result", "notifyError"})
"""The output of a workflow whose Notify states could not publish: ``{"result": <the
result>, "notifyError": {...}}``, the mark the status forwarder reads."""
# How Step Functions names a task state's IoT publish in an execution's history.
IOT_PUBLISH = ("aws-sdk:iotdataplane", "publish")


def execution_arn(state_machine_arn: str, name: str, *, express: bool = False) -> str:
    """arn:...:stateMachine:<machine> -> arn:...:execution:<machine>:<name>; for an Express
    state machine arn:...:express:<machine>:<name>, which its executions' ARNs begin with."""
    prefix, _, machine = state_machine_arn.rpartition(":stateMachine:")
    kind = "express" if express else "execution"
    return f"{prefix}:{kind}:{machine}:{name}"


def workflow_result(output: Any) -> Any:
    """The workflow's result in its execution's output (unwrapped from the unnotified mark)."""
    if (
        isinstance(output, dict)
        and output.keys() == UNNOTIFIED_KEYS
        and isinstance(output["notifyError"], dict)
    ):
        return output["result"]
    return output


def completion_from_description(description: dict[str, Any], via: str = "poll") -> Completion:
    """The completion a DescribeExecution answer of a final status tells."""
    output = description.get("output")
    return Completion(
        status=Status.parse(description.get("status")),
        via=via,
        execution_arn=description.get("executionArn"),
        output=workflow_result(json.loads(output)) if output is not None else None,
        error=description.get("error"),
        cause=description.get("cause"),
        stop_date=description.get("stopDate"),
        size=len(output) if output is not None else 0,
    )


def published_to(events: list[dict[str, Any]], topic: str) -> bool:
    """Whether ``events`` of an execution's history hold a task state's
    ``aws-sdk:iotdataplane:publish`` to ``topic`` that succeeded (with the events that
    scheduled it)."""
    by_id = {event.get("id"): event for event in events}
    for event in by_id.values():
        details = event.get("taskSucceededEventDetails") or {}
        if (details.get("resourceType"), details.get("resource")) != IOT_PUBLISH:
            continue
        started = by_id.get(event.get("previousEventId"), {})
        scheduled = by_id.get(started.get("previousEventId"), {})
        parameters = (scheduled.get("taskScheduledEventDetails") or {}).get("parameters")
        try:
            if json.loads(parameters or "{}").get("Topic") == topic:
                return True
        except (json.JSONDecodeError, AttributeError):
            continue
    return False
