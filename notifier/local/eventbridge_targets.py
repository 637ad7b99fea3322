"""Stands in for EventBridge's delivery to SNS topics and Lambda functions.

moto's EventBridge delivers to SQS, CloudWatch Logs, archives and API destinations, and
raises NotImplementedError for SNS and Lambda targets, which aborts the whole PutEvents.
This bridge delivers those two target kinds itself, with the event in the shape AWS sends
(ISO time, no moto-internal fields), and hands every other target back to moto. Lambda
targets are invoked asynchronously, as EventBridge does: a slow function never holds up the
delivery of the events behind it.
"""

from __future__ import annotations

import copy
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("notifier.local.eventbridge")

BRIDGED_SERVICES = ("sns", "lambda")
ASYNC_INVOCATIONS = 16


def aws_event(event: dict[str, Any]) -> dict[str, Any]:
    """moto's internal event message as EventBridge would deliver it."""
    delivered = {key: value for key, value in event.items() if key != "ingestion-time"}
    if isinstance(delivered.get("time"), int | float):
        moment = datetime.fromtimestamp(delivered["time"], tz=UTC)
        delivered["time"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return delivered


def _deliver(target: dict[str, Any], event: dict[str, Any], invoker: ThreadPoolExecutor) -> None:
    from moto.awslambda.models import lambda_backends
    from moto.sns.models import sns_backends
    from moto.utilities.arns import parse_arn

    arn = parse_arn(target["Arn"])
    body = target["Input"] if "Input" in target else json.dumps(aws_event(event))
    if arn.service == "sns":
        sns_backends[arn.account][arn.region].get_topic(target["Arn"]).publish(body)
    else:
        function = lambda_backends[arn.account][arn.region].get_function(target["Arn"])
        invoker.submit(_invoke, function, body)


def _invoke(function: Any, body: str) -> None:
    try:
        function.invoke(body, {"x-amz-invocation-type": "Event"}, {})
    except Exception:
        log.exception("EventBridge could not invoke %s", function.function_arn)


def install() -> None:
    from moto.events.models import Rule
    from moto.utilities.arns import parse_arn

    original_send = Rule.send_to_targets
    invoker = ThreadPoolExecutor(ASYNC_INVOCATIONS, thread_name_prefix="eventbridge-lambda")

    def send_to_targets(self: Any, original_event: Any, transform_input: bool = True) -> None:
        if not self.event_pattern.matches_event(original_event):
            return
        bridged = [t for t in self.targets if parse_arn(t["Arn"]).service in BRIDGED_SERVICES]
        for target in bridged:
            try:
                _deliver(target, original_event, invoker)
            except Exception:
                log.exception("EventBridge could not deliver to %s", target["Arn"])
        if len(bridged) < len(self.targets):
            rest = copy.copy(self)
            rest.targets = [t for t in self.targets if t not in bridged]
            original_send(rest, original_event, transform_input)

    Rule.send_to_targets = send_to_targets  # type: ignore[method-assign]  # moto patched
