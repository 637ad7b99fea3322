"""Step Functions status-change events reach EventBridge's SQS and SNS targets in AWS's shape."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from notifier.local.stack import LocalStack
from tests.local.test_workflows import new_id, start, wait_final

DETAIL_KEYS = {
    "executionArn", "stateMachineArn", "name", "status", "startDate", "stopDate",
    "input", "output", "inputDetails", "outputDetails", "error", "cause",
}  # fmt: skip


@pytest.fixture(scope="module")
async def status_queue(local_stack: LocalStack) -> str:
    """The stack's status queue, emptied once for this module's tests of what the session's
    earlier executions left in it (thousands of events by then, which reading through would
    be most of the test; SQS allows one purge a minute)."""
    url: str = local_stack.outputs["StatusQueueUrl"]
    async with local_stack.aws().client("sqs") as sqs:
        await sqs.purge_queue(QueueUrl=url)
    return url


async def statuses_for(
    sqs: Any, queue_url: str, execution_arns: list[str], count: int
) -> dict[str, list[dict[str, Any]]]:
    """``count`` events for each execution, in arrival order.

    The queue receives every execution's events (the whole session shares the stack), so
    everything read is deleted: what other tests left behind is of no use to anyone.
    """
    events: dict[str, list[dict[str, Any]]] = {arn: [] for arn in execution_arns}
    async with asyncio.timeout(60):
        while any(len(found) < count for found in events.values()):
            received = await sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            for message in received.get("Messages", []):
                event = json.loads(message["Body"])
                events.get(event["detail"]["executionArn"], []).append(event)
                await sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return events


async def test_status_changes_reach_queue_and_topic_subscribers(
    local_stack: LocalStack, status_queue: str
) -> None:
    async with local_stack.aws().client("sqs") as sqs, local_stack.aws().client("sns") as sns:
        subscriber_url = (await sqs.create_queue(QueueName=new_id("status-sub")))["QueueUrl"]
        attributes = await sqs.get_queue_attributes(
            QueueUrl=subscriber_url, AttributeNames=["QueueArn"]
        )
        await sns.subscribe(
            TopicArn=local_stack.outputs["StatusTopicArn"],
            Protocol="sqs",
            Endpoint=attributes["Attributes"]["QueueArn"],
            Attributes={"RawMessageDelivery": "true"},
        )
        name = new_id("hello")
        arn = await start(local_stack, "HelloStateMachineArn", name, {"subtopic": "events", "x": 1})
        await wait_final(local_stack, arn)
        direct = (await statuses_for(sqs, status_queue, [arn], 2))[arn]
        via_sns = (await statuses_for(sqs, subscriber_url, [arn], 2))[arn]

    for events in (direct, via_sns):
        assert [e["detail"]["status"] for e in events] == ["RUNNING", "SUCCEEDED"]
        for event in events:
            assert event["source"] == "aws.states"
            assert event["detail-type"] == "Step Functions Execution Status Change"
            assert event["resources"] == [arn]
            assert set(event["detail"]) == DETAIL_KEYS
            assert event["detail"]["name"] == name
        running, succeeded = events
        assert running["detail"]["stopDate"] is None
        assert json.loads(succeeded["detail"]["output"])["taskresult"] == "Hello 102 Class"
        assert succeeded["detail"]["stopDate"] >= succeeded["detail"]["startDate"]


async def test_stopped_and_failed_executions_send_their_final_status(
    local_stack: LocalStack, status_queue: str
) -> None:
    stopped = await start(
        local_stack,
        "HelloStateMachineArn",
        new_id("stop"),
        {"subtopic": "events", "waitSeconds": 30},
    )
    failed = await start(
        local_stack, "QCStateMachineArn", new_id("qc"), {"subtopic": "events", "StreamID": "s"}
    )
    async with local_stack.aws().client("stepfunctions") as sfn:
        await sfn.stop_execution(executionArn=stopped, error="Operator", cause="changed my mind")
    await wait_final(local_stack, stopped)
    await wait_final(local_stack, failed)

    async with local_stack.aws().client("sqs") as sqs:
        found = await statuses_for(sqs, status_queue, [stopped, failed], 2)
    aborted, errored = found[stopped], found[failed]
    assert [e["detail"]["status"] for e in aborted] == ["RUNNING", "ABORTED"]
    assert [e["detail"]["status"] for e in errored] == ["RUNNING", "FAILED"]
    assert errored[1]["detail"]["error"] == "ValidationError"
    assert "GroupID" in errored[1]["detail"]["cause"]
    assert aborted[1]["detail"]["output"] is None
