"""Workflows that end without publishing still reach their instance, through the forwarder."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from notifier.local.stack import LocalStack
from tests.local.test_workflows import Notifications, new_id, start, wait_final
from tests.support.eventually import EVENTUALLY
from tests.support.mqtt import MqttRecorder
from tests.support.silent_workflows import create_silent_workflows


@pytest.fixture(scope="module")
async def stack(local_stack: LocalStack) -> LocalStack:
    await create_silent_workflows(local_stack)
    return local_stack


async def queue_for(stack: LocalStack, subtopic: str) -> str:
    async with stack.aws().client("sqs") as sqs:
        name = f"{stack.outputs['CompletionQueuePrefix']}{subtopic}"
        return str((await sqs.create_queue(QueueName=name))["QueueUrl"])


async def next_in(stack: LocalStack, url: str) -> Any:
    async with stack.aws().client("sqs") as sqs, asyncio.timeout(EVENTUALLY):
        while True:
            received = await sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
            for message in received.get("Messages", []):
                await sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                return json.loads(message["Body"])


@pytest.mark.parametrize(
    ("machine", "payload", "status", "error"),
    [
        ("TestSilentStateMachineArn", {"waitSeconds": 0, "fail": True}, "FAILED", "Lambda.Unknown"),
        ("TestSilentTimeoutStateMachineArn", {}, "TIMED_OUT", None),
        ("HelloStateMachineArn", {"waitSeconds": 30}, "ABORTED", None),
    ],
)
async def test_an_ending_without_publishing_reaches_the_instance_topic_and_queue(
    stack: LocalStack, machine: str, payload: dict[str, Any], status: str, error: str | None
) -> None:
    subtopic = new_id("fwd")
    url = await queue_for(stack, subtopic)
    async with (
        MqttRecorder(stack, subtopic) as completions,
        MqttRecorder(stack, None) as status_topics,
    ):
        name = new_id("silent")
        arn = await start(stack, machine, name, {**payload, "subtopic": subtopic})
        if status == "ABORTED":
            async with stack.aws().client("stepfunctions") as sfn:
                await sfn.stop_execution(executionArn=arn, error="Operator", cause="outside")
        described = await wait_final(stack, arn)
        assert described["status"] == status
        # Its final status reaches the status topic, and one message the instance topic.
        prefix = f"{stack.settings.topic_root}/{subtopic}"
        notifications = Notifications(stack, completions, status_topics, prefix)
        (message,) = await notifications.all_of(name, arn)
    queued = await next_in(stack, url)
    assert queued == message
    assert message["txnId"] == name and message["executionArn"] == arn
    assert message["status"] == status and message["finishedAt"].endswith("Z")
    assert message["publishedBy"] == "status-forwarder"
    if error is not None:
        assert message["error"] == error


async def test_an_event_the_forwarder_fails_on_is_tried_three_times_then_kept_and_alarmed(
    stack: LocalStack,
) -> None:
    """The forwarder's errors reach Lambda, which retries the event twice and then sends it to
    the function's dead-letter queue: the undelivered-events queue, which the
    StatusUndeliveredAlarm watches. Here IoT refuses the completion's topic (a subtopic with
    a wildcard), while the status publish, made at every attempt, counts them."""
    name = new_id("unpublishable")
    machine_arn = stack.outputs["HelloStateMachineArn"]
    detail = {
        "executionArn": f"{machine_arn}:{name}".replace(":stateMachine:", ":execution:"),
        "stateMachineArn": machine_arn,
        "name": name,
        "status": "FAILED",
        "input": json.dumps({"subtopic": "no+wildcards"}),
        "error": "Failed",
    }
    status_topic = f"{stack.outputs['TopicRoot']}/status/{machine_arn.rsplit(':', 1)[1]}/{name}"
    async with MqttRecorder(stack, None) as status_topics:
        async with stack.aws().client("events") as events:
            entry = {
                "Source": "aws.states",
                "DetailType": "Step Functions Execution Status Change",
                "Detail": json.dumps(detail),
            }
            await events.put_events(Entries=[entry])
        url = stack.outputs["StatusUndeliveredQueueUrl"]
        async with stack.aws().client("sqs") as sqs, asyncio.timeout(EVENTUALLY):
            kept: list[Any] = []
            while not kept:
                received = await sqs.receive_message(
                    QueueUrl=url, WaitTimeSeconds=1, MessageAttributeNames=["All"]
                )
                kept = [m for m in received.get("Messages", []) if name in m["Body"]]
        # Each attempt published the status before it failed, all of them before the event
        # was dead-lettered. The broker delivers one publisher's messages in order, so
        # those before a last one published now are all there were.
        async with stack.aws().client("iot-data") as iot:
            await iot.publish(topic=status_topic, qos=1, payload=b'{"last": true}')
        attempts = []
        while "last" not in (message := await status_topics.on_topic(status_topic)):
            attempts.append(message)
    assert [attempt["status"] for attempt in attempts] == ["FAILED"] * 3
    (message,) = kept
    assert json.loads(message["Body"])["detail"] == detail
    attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert attributes["ErrorCode"] == "200"
    assert "ForwardingFailed" in attributes["ErrorMessage"]
    assert f"publish to notifier/no+wildcards/{name} failed" in attributes["ErrorMessage"]
    assert "InvalidRequestException" in attributes["ErrorMessage"]  # as IoT refuses it
    assert attributes["RequestID"]
