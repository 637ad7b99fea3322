"""Republishes Step Functions status changes: the fallback for workflows that end silently.

EventBridge hands every "Step Functions Execution Status Change" of the stack's workflows to
this function. For each one it publishes, over AWS IoT:

- ``<TopicRoot>/status/<stateMachine>/<execution name>``: the status, for dashboards (all
  statuses, RUNNING included);
- for a final status, ``<TopicRoot>/<subtopic>/<execution name>``: a completion in the shape
  the workflows' Notify states publish (plus ``"publishedBy": "status-forwarder"``), to the
  instance that started the execution (the ``subtopic`` of the execution's input);

and sends that completion to the instance's own queue, ``<CompletionQueuePrefix><subtopic>``,
when the instance created one. A queue is per instance, so no instance ever reads another's
completions. Each delivery is tried independently: a broker outage does not stop the queue
message, which is what the daemon reads while it cannot receive MQTT. If any failed, the
invocation fails once all were tried: Lambda retries the event (twice; the deliveries that
worked are made again, and count once), then sends it to the function's dead-letter queue,
which alarms. Nothing is lost silently.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger()
log.setLevel(logging.INFO)

FINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
DEFAULT_SUBTOPIC = "default"


def completion(detail: dict[str, Any]) -> dict[str, Any]:
    """The Notify states' message for the final status in ``detail``."""
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
        output = detail.get("output")
        message["output"] = json.loads(output) if isinstance(output, str) else output
        if (detail.get("outputDetails") or {}).get("included") is False:
            # Too large for the event: whoever gets this must ask DescribeExecution.
            message["outputIncluded"] = False
    else:
        message["error"] = detail.get("error") or detail["status"]
        message["cause"] = detail.get("cause") or ""
    return message


def subtopic_of(detail: dict[str, Any]) -> str:
    """The execution input's ``subtopic``, as the workflows read it (``default`` without)."""
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
    def __init__(self, iot: Any, sqs: Any, topic_root: str, queue_prefix: str) -> None:
        self.iot = iot
        self.sqs = sqs
        self.topic_root = topic_root
        self.queue_prefix = queue_prefix
        self._queue_urls: dict[str, str] = {}
        """Queue URL by subtopic, once found: a completion costs one SQS call, not two."""

    def forward(self, event: dict[str, Any]) -> dict[str, bool]:
        """Make every delivery of ``event``; say which were made (the queue's is False when
        the instance has none). Raises :class:`ForwardingFailed` after trying them all if
        any failed, so that Lambda retries the event and, failing still, sends it to the
        function's dead-letter queue."""
        detail = event["detail"]
        name = detail["name"]
        machine = detail["stateMachineArn"].rsplit(":", 1)[-1]
        deliveries: list[tuple[str, Callable[[], bool]]] = []
        if detail["status"] in FINAL:
            subtopic = subtopic_of(detail)
            message = completion(detail)
            instance_topic = f"{self.topic_root}/{subtopic}/{name}"
            # The queue first: it is what the daemon reads when IoT is what fails.
            deliveries.append(("queue", lambda: self._enqueue(subtopic, message)))
            deliveries.append(("mqtt", lambda: self._publish(instance_topic, message)))
        status_topic = f"{self.topic_root}/status/{machine}/{name}"
        deliveries.append(("status", lambda: self._publish(status_topic, status_message(event))))
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

    def _publish(self, topic: str, message: dict[str, Any]) -> bool:
        try:
            self.iot.publish(topic=topic, qos=1, payload=json.dumps(message).encode())
        except (ClientError, BotoCoreError) as exc:
            raise DeliveryFailed(f"publish to {topic} failed: {exc}") from exc
        return True

    def _enqueue(self, subtopic: str, message: dict[str, Any]) -> bool:
        """True if sent; False when the instance has no queue. DeliveryFailed otherwise."""
        try:
            url = self._queue_urls.get(subtopic)
            if url is None:
                name = f"{self.queue_prefix}{subtopic}"
                url = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
                self._queue_urls[subtopic] = url
            self.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(message))
        except ClientError as exc:
            self._queue_urls.pop(subtopic, None)  # deleted, perhaps: look it up next time
            code = exc.response.get("Error", {}).get("Code", "")
            if "NonExistentQueue" not in code and "QueueDoesNotExist" not in code:
                raise DeliveryFailed(f"queue for {subtopic}: {exc}") from exc
            return False
        except BotoCoreError as exc:
            raise DeliveryFailed(f"queue for {subtopic}: {exc}") from exc
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
    )


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return warm_forwarder().forward(event)
