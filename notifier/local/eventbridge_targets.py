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
be delivered to a target at all (any target, moto's too) goes to the target's own
dead-letter queue, with EventBridge's ``ERROR_CODE``, ``ERROR_MESSAGE``, ``RULE_ARN`` and
``TARGET_ARN``; the rule's other targets still get it.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("notifier.local.eventbridge")

BRIDGED_SERVICES = ("sns", "lambda")
ASYNC_INVOCATIONS = 16
RETRY_DELAYS = (1.0, 2.0)
"""Seconds before each retry of a failed asynchronous invocation: two retries, as Lambda's."""

DeadLetter = Callable[[str, str, dict[str, str]], None]
"""Sends a body with string attributes to the SQS queue of an ARN."""


def aws_event(event: dict[str, Any]) -> dict[str, Any]:
    """moto's internal event message as EventBridge would deliver it."""
    delivered = {key: value for key, value in event.items() if key != "ingestion-time"}
    if isinstance(delivered.get("time"), int | float):
        moment = datetime.fromtimestamp(delivered["time"], tz=UTC)
        delivered["time"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return delivered


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


class AsyncInvocations:
    """Lambda's asynchronous invocations: each on a thread of a pool, so that a slow function
    holds up no other event; a failed one retried twice, then its event sent to the
    function's dead-letter queue, if it has one.

    Closing abandons what has not finished, retries included: the stack is stopping, and
    its functions and queues with it.
    """

    def __init__(
        self,
        dead_letter: DeadLetter = send_to_queue,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        workers: int = ASYNC_INVOCATIONS,
    ) -> None:
        self._dead_letter = dead_letter
        self._retry_delays = tuple(retry_delays)
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="lambda-async")

    def submit(self, function: Any, body: str) -> Future[None] | None:
        """Queue an invocation of the moto ``LambdaFunction`` with the event ``body`` (none
        once closed)."""
        if self._stopping.is_set():
            self._abandon(function)
            return None
        return self._pool.submit(self._invoke, function, body)

    def _invoke(self, function: Any, body: str) -> None:
        request_id = str(uuid.uuid4())
        attempts = 1 + len(self._retry_delays)
        error = ""
        for attempt, delay in enumerate((0.0, *self._retry_delays), start=1):
            if self._stopping.wait(delay):
                break
            try:
                payload, errored, _ = function._invoke_lambda(event=body)
            except Exception as exc:  # the runtime itself failed: as a failed invocation
                payload, errored = json.dumps({"errorMessage": str(exc)}), True
            if not errored:
                return
            error = str(payload)
            log.warning(
                "%s failed (attempt %d of %d): %s",
                function.function_arn, attempt, attempts, error[:500],
            )  # fmt: skip
        if self._stopping.is_set():  # now, or its worker was stopped under it
            self._abandon(function)
            return
        queue_arn = (getattr(function, "dead_letter_config", None) or {}).get("TargetArn")
        if queue_arn is None:
            log.error(
                "%s: event dropped after its retries (no dead-letter queue)", function.function_arn
            )
            return
        attributes = {"RequestID": request_id, "ErrorCode": "200", "ErrorMessage": error[:1000]}
        try:
            self._dead_letter(queue_arn, body, attributes)
        except Exception:
            log.exception("%s: event lost, its dead-letter queue refused it", function.function_arn)

    @staticmethod
    def _abandon(function: Any) -> None:
        log.info("%s: an event abandoned, the stack is stopping", function.function_arn)

    def close(self) -> None:
        """Stop: queued invocations are dropped, waiting retries given up; returns at once
        (an invocation under way ends when the Lambda runtime stops its worker)."""
        self._stopping.set()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _deliver(target: dict[str, Any], event: dict[str, Any], invocations: AsyncInvocations) -> None:
    from moto.awslambda.models import lambda_backends
    from moto.sns.models import sns_backends
    from moto.utilities.arns import parse_arn

    arn = parse_arn(target["Arn"])
    body = target["Input"] if "Input" in target else json.dumps(aws_event(event))
    if arn.service == "sns":
        sns_backends[arn.account][arn.region].get_topic(target["Arn"]).publish(body)
    else:
        function = lambda_backends[arn.account][arn.region].get_function(target["Arn"])
        invocations.submit(function, body)


def _undeliverable(rule: Any, target: dict[str, Any], event: Any, exc: Exception) -> None:
    """An event ``target`` did not take: to the target's dead-letter queue, if it has one."""
    queue_arn = target.get("DeadLetterConfig", {}).get("Arn")
    if queue_arn is None:
        return
    attributes = {
        "ERROR_CODE": type(exc).__name__,
        "ERROR_MESSAGE": str(exc)[:1000],
        "RULE_ARN": rule.arn,
        "TARGET_ARN": target["Arn"],
    }
    send_to_queue(queue_arn, json.dumps(aws_event(event)), attributes)


def install(invocations: AsyncInvocations) -> None:
    """Deliver every rule's events target by target: SNS and Lambda (through
    ``invocations``) here, the rest by moto."""
    from moto.events.models import Rule
    from moto.utilities.arns import parse_arn

    original_send = Rule.send_to_targets

    def send_to_targets(self: Any, original_event: Any, transform_input: bool = True) -> None:
        if not self.event_pattern.matches_event(original_event):
            return
        for target in self.targets:
            try:
                if parse_arn(target["Arn"]).service in BRIDGED_SERVICES:
                    _deliver(target, original_event, invocations)
                else:
                    alone = copy.copy(self)
                    alone.targets = [target]
                    original_send(alone, original_event, transform_input)
            except Exception as exc:
                log.exception("EventBridge could not deliver to %s", target["Arn"])
                _undeliverable(self, target, original_event, exc)

    Rule.send_to_targets = send_to_targets  # type: ignore[method-assign]  # moto patched
