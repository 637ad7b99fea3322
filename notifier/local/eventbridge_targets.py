"""Stands in for EventBridge's delivery to SNS topics and Lambda functions.

moto's EventBridge delivers to SQS, CloudWatch Logs, archives and API destinations, and
raises NotImplementedError for SNS and Lambda targets, which aborts the whole PutEvents.
This bridge delivers those two target kinds itself, with the event in the shape AWS sends
(ISO time, no moto-internal fields), and hands every other target back to moto. Lambda
targets are invoked asynchronously, as EventBridge does: a slow function never holds up the
delivery of the events behind it.

What AWS does when that fails is done too. A function whose invocation fails is retried
twice, as Lambda retries asynchronous invocations (after a second and two, where AWS waits
about a minute and two), and the event then goes to the function's dead-letter queue, with
Lambda's ``RequestID``, ``ErrorCode`` and ``ErrorMessage`` attributes. An event that cannot
be delivered to a target at all goes to the target's own dead-letter queue, with
EventBridge's ``ERROR_CODE``, ``ERROR_MESSAGE``, ``RULE_ARN`` and ``TARGET_ARN``.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("notifier.local.eventbridge")

BRIDGED_SERVICES = ("sns", "lambda")
ASYNC_INVOCATIONS = 16
RETRY_DELAYS = (1.0, 2.0)
"""Seconds before each retry of a failed asynchronous invocation: two retries, as Lambda's."""


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
        invoker.submit(invoke_async, function, body, send_to_queue)


def invoke_async(
    function: Any,
    body: str,
    dead_letter: Callable[[str, str, dict[str, str]], None],
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Invoke a moto ``LambdaFunction`` as Lambda runs an asynchronous invocation: retried
    twice when it fails, then sent to the function's dead-letter queue, if it has one."""
    request_id = str(uuid.uuid4())
    error = ""
    for attempt, delay in enumerate((0.0, *RETRY_DELAYS), start=1):
        sleep(delay)
        try:
            payload, errored, _ = function._invoke_lambda(event=body)
        except Exception as exc:  # the runtime itself failed: as a failed invocation
            payload, errored = json.dumps({"errorMessage": str(exc)}), True
        if not errored:
            return
        error = str(payload)
        log.warning(
            "%s failed (attempt %d of %d): %s",
            function.function_arn, attempt, 1 + len(RETRY_DELAYS), error[:500],
        )  # fmt: skip
    queue_arn = (getattr(function, "dead_letter_config", None) or {}).get("TargetArn")
    if queue_arn is None:
        log.error(
            "%s: event dropped after its retries (no dead-letter queue)", function.function_arn
        )
        return
    attributes = {"RequestID": request_id, "ErrorCode": "200", "ErrorMessage": error[:1000]}
    dead_letter(queue_arn, body, attributes)


def send_to_queue(queue_arn: str, body: str, attributes: dict[str, str]) -> None:
    """Send ``body`` to the SQS queue ``queue_arn`` with string (and number) attributes."""
    from moto.sqs.models import sqs_backends
    from moto.utilities.arns import parse_arn

    arn = parse_arn(queue_arn)
    sqs_backends[arn.account][arn.region].send_message(
        arn.resource_id,
        body,
        message_attributes={
            name: {"DataType": "Number" if value.isdigit() else "String", "StringValue": value}
            for name, value in attributes.items()
        },
    )


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
            except Exception as exc:
                log.exception("EventBridge could not deliver to %s", target["Arn"])
                _undeliverable(self, target, original_event, exc)
        if len(bridged) < len(self.targets):
            rest = copy.copy(self)
            rest.targets = [t for t in self.targets if t not in bridged]
            original_send(rest, original_event, transform_input)

    def _undeliverable(rule: Any, target: dict[str, Any], event: Any, exc: Exception) -> None:
        queue_arn = target.get("DeadLetterConfig", {}).get("Arn")
        if queue_arn is not None:
            attributes = {
                "ERROR_CODE": type(exc).__name__,
                "ERROR_MESSAGE": str(exc)[:1000],
                "RULE_ARN": rule.arn,
                "TARGET_ARN": target["Arn"],
            }
            send_to_queue(queue_arn, json.dumps(aws_event(event)), attributes)

    Rule.send_to_targets = send_to_targets  # type: ignore[method-assign]  # moto patched
