"""Republishes Step Functions status changes: the completions the workflows cannot publish.

EventBridge hands every "Step Functions Execution Status Change" of the stack's workflows to
this function. For a final status it makes a completion in the shape the workflows' Notify
states publish (plus ``"publishedBy": "status-forwarder"``), and

- sends it to the instance's own queue, ``<CompletionQueuePrefix><instance>``, when the
  instance created one (``<instance>`` is the first level of the ``subtopic`` of the
  execution's input: a daemon spreading its completions over several connections gives
  them ``<instance>/<n>``). A queue is per instance, so no instance ever reads another's
  completions;
- publishes it to ``<TopicRoot>/<subtopic>/<execution name>`` unless the workflow did: a
  workflow publishes its own success, so only failures, time-outs, aborts and successes
  whose notification failed (the output carries ``notifyError``, see :func:`unnotified`)
  are published here. Each completion is one message on the instance's connection.

A completion whose message would exceed IoT's payload limit, or whose output EventBridge
left out of the event, goes as a pointer: ``"fetchOutput": true`` and no output, which the
daemon fetches with DescribeExecution. Its size is measured before anything is sent.

It also publishes the status to ``<TopicRoot>/status/<stateMachine>/<execution name>``, for
dashboards, for one execution in ``STATUS_FEED_ONE_IN`` (chosen by its ARN, so an
execution's RUNNING and final status go together): the feed stays within one connection's
delivery limit at the account's execution rate.

Each delivery is tried independently: a broker outage does not stop the queue message,
which is what the daemon reads while it cannot receive MQTT. If any failed, the invocation
fails once all were tried: Lambda retries the event (twice; the deliveries that worked are
made again, and count once), then sends it to the function's dead-letter queue, which
alarms. Nothing is lost silently.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger()
log.setLevel(logging.INFO)

FINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
DEFAULT_SUBTOPIC = "default"
MAX_PAYLOAD_BYTES = 128_000
"""IoT Core's payload limit, 128 KB, read as the smaller of 128,000 and 131,072 bytes."""
UNNOTIFIED_KEYS = {"result", "notifyError"}
"""The output of a workflow whose Notify states could not publish: the result, wrapped."""


def unnotified(output: Any) -> bool:
    """Whether a SUCCEEDED execution's output says its workflow published nothing."""
    return (
        isinstance(output, dict)
        and set(output) == UNNOTIFIED_KEYS
        and isinstance(output["notifyError"], dict)
    )


def event_output(detail: dict[str, Any]) -> tuple[bool, Any]:
    """Whether the event carries the execution's output (EventBridge leaves out one too
    large for the event), and the output."""
    details = detail.get("outputDetails") or {}
    output = detail.get("output")
    if details.get("included") is False or output is None:
        return False, None
    return True, json.loads(output) if isinstance(output, str) else output


def workflow_notified(detail: dict[str, Any]) -> bool:
    """Whether the workflow published this completion itself: a success whose output does
    not say otherwise. When EventBridge left the output out, that cannot be told, and the
    completion is published here too (the daemon counts it once)."""
    if detail["status"] != "SUCCEEDED":
        return False
    included, output = event_output(detail)
    return included and not unnotified(output)


def encoded(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def in_status_feed(execution_arn: str, one_in: int) -> bool:
    """Whether the execution is one of the one in ``one_in`` the status feed carries."""
    return zlib.crc32(execution_arn.encode()) % one_in == 0


def completion(detail: dict[str, Any]) -> dict[str, Any]:
    """The Notify states' message for the final status in ``detail``: with the output when
    it fits in an IoT message, else the pointer (``fetchOutput``, no output)."""
    stop_date = detail.get("stopDate")
    finished_at = (
        datetime.fromtimestamp(stop_date / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
        if isinstance(stop_date, int | float)
        else None
    )
    message: dict[str, Any] = {
        "txnId": detail["name"],
        "finishedAt": finished_at,
        "executionArn": detail["executionArn"],
        "stateMachine": detail["stateMachineArn"].rsplit(":", 1)[-1],
        "status": detail["status"],
        "publishedBy": "status-forwarder",
    }
    if detail["status"] == "SUCCEEDED":
        included, output = event_output(detail)
        if included:
            message["output"] = output["result"] if unnotified(output) else output
        if not included or len(encoded(message)) > MAX_PAYLOAD_BYTES:
            message.pop("output", None)
            message["fetchOutput"] = True
    else:
        message["error"] = detail.get("error") or detail["status"]
        message["cause"] = detail.get("cause") or ""
    return message


def subtopic_of(detail: dict[str, Any]) -> str | None:
    """The execution input's ``subtopic``, as the workflows read it (``default`` without);
    None when EventBridge left the input out, too large for the event."""
    if (detail.get("inputDetails") or {}).get("included") is False:
        return None
    raw = detail.get("input")
    try:
        execution_input = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return DEFAULT_SUBTOPIC
    subtopic = execution_input.get("subtopic") if isinstance(execution_input, dict) else None
    return subtopic if isinstance(subtopic, str) and subtopic else DEFAULT_SUBTOPIC


def status_message(event: dict[str, Any]) -> dict[str, Any]:
    detail = event["detail"]
    return {
        "executionArn": detail["executionArn"],
        "stateMachine": detail["stateMachineArn"].rsplit(":", 1)[-1],
        "name": detail["name"],
        "status": detail["status"],
        "startDate": detail.get("startDate"),
        "stopDate": detail.get("stopDate"),
        "time": event.get("time"),
    }


class DeliveryFailed(Exception):
    """One delivery (a publish, a queue message) did not get through."""


class ForwardingFailed(Exception):
    """Some deliveries of an event failed; the others were made."""


class Forwarder:
    def __init__(
        self, iot: Any, sqs: Any, topic_root: str, queue_prefix: str, status_one_in: int = 1
    ) -> None:
        self.iot = iot
        self.sqs = sqs
        self.topic_root = topic_root
        self.queue_prefix = queue_prefix
        self.status_one_in = status_one_in
        self._queue_urls: dict[str, str] = {}
        """Queue URL by instance, once found: a completion costs one SQS call, not two."""

    def forward(self, event: dict[str, Any]) -> dict[str, bool]:
        """Make every delivery of ``event``; say which were made (the queue's is False when
        the instance has none; the publishes are left out when they are not this function's
        to make). Raises :class:`ForwardingFailed` after trying them all if
        any failed, so that Lambda retries the event and, failing still, sends it to the
        function's dead-letter queue."""
        detail = event["detail"]
        name = detail["name"]
        machine = detail["stateMachineArn"].rsplit(":", 1)[-1]
        deliveries: list[tuple[str, Callable[[], bool]]] = []
        if detail["status"] in FINAL:
            deliveries.extend(self._completion_deliveries(detail))
        if in_status_feed(detail["executionArn"], self.status_one_in):
            status_topic = f"{self.topic_root}/status/{machine}/{name}"
            status = status_message(event)
            deliveries.append(("status", lambda: self._publish(status_topic, status)))
        delivered: dict[str, bool] = {}
        failures: list[str] = []
        for kind, deliver in deliveries:
            try:
                delivered[kind] = deliver()
            except DeliveryFailed as exc:
                log.warning("%s", exc)
                delivered[kind] = False
                failures.append(str(exc))
        if failures:
            raise ForwardingFailed(
                f"{detail['executionArn']} {detail['status']}: " + "; ".join(failures)
            )
        return delivered

    def _completion_deliveries(
        self, detail: dict[str, Any]
    ) -> list[tuple[str, Callable[[], bool]]]:
        """The deliveries of a final status to the instance that started the execution."""
        subtopic = subtopic_of(detail)
        if subtopic is None:
            # Its instance cannot be told; its sweeps find the execution ended.
            log.warning("%s: the event has no input, no instance to tell", detail["executionArn"])
            return []
        message = completion(detail)
        instance_topic = f"{self.topic_root}/{subtopic}/{detail['name']}"
        # MQTT first, as it is what the daemon hears soonest; the queue's copy follows
        # whether or not the publish worked (every delivery is tried).
        deliveries = []
        if not workflow_notified(detail):
            deliveries.append(("mqtt", lambda: self._publish(instance_topic, message)))
        instance = subtopic.split("/", 1)[0]
        deliveries.append(("queue", lambda: self._enqueue(instance, message)))
        return deliveries

    def _publish(self, topic: str, message: dict[str, Any]) -> bool:
        payload = encoded(message)
        if len(payload) > MAX_PAYLOAD_BYTES:  # never tried: IoT would refuse it
            raise DeliveryFailed(f"publish to {topic}: {len(payload)} bytes is over IoT's limit")
        try:
            self.iot.publish(topic=topic, qos=1, payload=payload)
        except (ClientError, BotoCoreError) as exc:
            raise DeliveryFailed(f"publish to {topic} failed: {exc}") from exc
        return True

    def _enqueue(self, instance: str, message: dict[str, Any]) -> bool:
        """True if sent; False when the instance has no queue. DeliveryFailed otherwise."""
        try:
            url = self._queue_urls.get(instance)
            if url is None:
                name = f"{self.queue_prefix}{instance}"
                url = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
                self._queue_urls[instance] = url
            self.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(message))
        except ClientError as exc:
            self._queue_urls.pop(instance, None)  # deleted, perhaps: look it up next time
            code = exc.response.get("Error", {}).get("Code", "")
            if "NonExistentQueue" not in code and "QueueDoesNotExist" not in code:
                raise DeliveryFailed(f"queue for {instance}: {exc}") from exc
            return False
        except BotoCoreError as exc:
            raise DeliveryFailed(f"queue for {instance}: {exc}") from exc
        return True


@functools.cache
def warm_forwarder() -> Forwarder:
    """One per Lambda container, made at its first event: its clients and the queue URLs it
    found serve every later event the container handles."""
    return Forwarder(
        boto3.client("iot-data"),
        boto3.client("sqs"),
        os.environ["TOPIC_ROOT"],
        os.environ["COMPLETION_QUEUE_PREFIX"],
        int(os.environ.get("STATUS_FEED_ONE_IN", "1")),
    )


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return warm_forwarder().forward(event)
