"""The five workflows, deployed by `LocalStack` from the real template, run end to end."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from notifier.local.stack import LocalStack
from tests.mqtt_support import MqttRecorder

FINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def start(stack: LocalStack, machine: str, name: str, payload: dict[str, Any]) -> str:
    async with stack.aws().client("stepfunctions") as sfn:
        response = await sfn.start_execution(
            stateMachineArn=stack.outputs[machine], name=name, input=json.dumps(payload)
        )
    return str(response["executionArn"])


async def wait_final(stack: LocalStack, execution_arn: str, timeout: float = 90) -> dict[str, Any]:
    async with stack.aws().client("stepfunctions") as sfn:
        async with asyncio.timeout(timeout):
            while True:
                described: dict[str, Any] = await sfn.describe_execution(executionArn=execution_arn)
                if described["status"] in FINAL:
                    return described
                await asyncio.sleep(0.2)


async def read_object(stack: LocalStack, key: str) -> dict[str, Any]:
    async with stack.aws().client("s3") as s3:
        response = await s3.get_object(Bucket=stack.outputs["ProcessDataBucketName"], Key=key)
        async with response["Body"] as body:
            data: dict[str, Any] = json.loads(await body.read())
            return data


async def start_process_a(
    stack: LocalStack, subtopic: str, data: dict[str, Any]
) -> tuple[str, str]:
    txn = new_id("txn")
    async with stack.aws().client("s3") as s3:
        await s3.put_object(
            Bucket=stack.outputs["ProcessDataBucketName"],
            Key=txn,
            Body=json.dumps(data).encode(),
            ServerSideEncryption="AES256",
        )
    arn = await start(
        stack, "ProcessAStateMachineArn", txn, {"processData": txn, "subtopic": subtopic}
    )
    return txn, arn


async def test_process_a_publishes_completion_and_fills_steps(local_stack: LocalStack) -> None:
    subtopic = new_id("sub")
    host = local_stack.settings.host
    async with MqttRecorder(host, local_stack.broker.port, f"notifier/{subtopic}/#") as mqtt:
        txn, arn = await start_process_a(
            local_stack, subtopic, {"foo": "foo val", "bar": "bar val"}
        )
        message = await mqtt.on_topic(f"notifier/{subtopic}/{txn}")

    assert message["txnId"] == txn
    assert message["executionArn"] == arn
    assert message["status"] == "SUCCEEDED"
    assert (await wait_final(local_stack, arn))["status"] == "SUCCEEDED"

    data = await read_object(local_stack, txn)
    assert data["foo"] == "foo val"
    assert data["step-a-output"]["stepAOutput1"] == "a1"
    assert data["step-b-output"] == {"property1": "p1", "property2": "p2"}
    assert data["step-c-output"] == {"cProperty": "i like c"}
    assert data["step-d-output"] == {"d": "d output"}
    assert data["step-e-output"] == {"e": "e output"}
    downstream = data["step-f-output"]["downstreamExecutionArn"]
    assert ":execution:" in downstream
    assert (await wait_final(local_stack, downstream))["status"] == "SUCCEEDED"


async def test_process_a_forced_failure_is_published_and_described(local_stack: LocalStack) -> None:
    subtopic = new_id("sub")
    async with MqttRecorder(
        local_stack.settings.host, local_stack.broker.port, f"notifier/{subtopic}/#"
    ) as mqtt:
        txn, arn = await start_process_a(local_stack, subtopic, {"foo": "x", "fail": "step-c"})
        message = await mqtt.on_topic(f"notifier/{subtopic}/{txn}")

    assert message["status"] == "FAILED"
    assert message["error"] == "ForcedFailure"
    assert "step-c" in message["cause"]
    described = await wait_final(local_stack, arn)
    assert described["status"] == "FAILED"
    assert described["error"] == "ForcedFailure"
    data = await read_object(local_stack, txn)
    assert "step-b-output" in data and "step-c-output" not in data


async def test_hello_returns_taskresult_after_wait(local_stack: LocalStack) -> None:
    subtopic = new_id("sub")
    async with MqttRecorder(
        local_stack.settings.host, local_stack.broker.port, f"notifier/{subtopic}/#"
    ) as mqtt:
        name = new_id("hello")
        arn = await start(
            local_stack,
            "HelloStateMachineArn",
            name,
            {"subtopic": subtopic, "thekey": "thevalue", "waitSeconds": 1},
        )
        topic, message = await mqtt.next()
    assert topic == f"notifier/{subtopic}/{name}"
    assert message["status"] == "SUCCEEDED"
    assert message["output"]["taskresult"] == "Hello 102 Class"
    described = await wait_final(local_stack, arn)
    output = json.loads(described["output"])
    assert output["thekey"] == "thevalue"
    assert output["taskresult"] == "Hello 102 Class"


async def test_qc_runs_branches_records_summary_and_notifies(local_stack: LocalStack) -> None:
    group = new_id("group")
    async with local_stack.aws().client("sqs") as sqs, local_stack.aws().client("sns") as sns:
        queue_url = (await sqs.create_queue(QueueName=new_id("qc-summary")))["QueueUrl"]
        attributes = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        await sns.subscribe(
            TopicArn=local_stack.outputs["QCSummaryTopicArn"],
            Protocol="sqs",
            Endpoint=attributes["Attributes"]["QueueArn"],
            Attributes={"RawMessageDelivery": "true"},
        )
        arn = await start(
            local_stack,
            "QCStateMachineArn",
            new_id("qc"),
            {"subtopic": "qc-test", "GroupID": group, "StreamID": "streamA"},
        )
        assert (await wait_final(local_stack, arn))["status"] == "SUCCEEDED"
        received = await sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=5)
    assert group in received["Messages"][0]["Body"]

    async with local_stack.aws().client("dynamodb") as dynamodb:
        rows = await dynamodb.query(
            TableName=local_stack.outputs["QCSummaryTableName"],
            KeyConditionExpression="GroupID = :g",
            ExpressionAttributeValues={":g": {"S": group}},
        )
    assert rows["Count"] == 1
    row = rows["Items"][0]
    assert row["StreamID"]["S"] == "streamA"
    assert "TotalPass" in row


async def test_qc_without_group_id_fails_with_clear_error(local_stack: LocalStack) -> None:
    arn = await start(
        local_stack, "QCStateMachineArn", new_id("qc"), {"subtopic": "qc-test", "StreamID": "s"}
    )
    described = await wait_final(local_stack, arn)
    assert described["status"] == "FAILED"
    assert described["error"] == "ValidationError"
    assert "GroupID" in described["cause"]


async def take_approval_request(stack: LocalStack, execution_name: str) -> dict[str, Any]:
    """The approval request of one execution (other tests' requests are left alone)."""
    async with stack.aws().client("sqs") as sqs:
        async with asyncio.timeout(60):
            while True:
                received = await sqs.receive_message(
                    QueueUrl=stack.outputs["ApprovalQueueUrl"],
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=1,
                    VisibilityTimeout=0,
                )
                for message in received.get("Messages", []):
                    body: dict[str, Any] = json.loads(message["Body"])
                    if execution_name in json.dumps(body):
                        await sqs.delete_message(
                            QueueUrl=stack.outputs["ApprovalQueueUrl"],
                            ReceiptHandle=message["ReceiptHandle"],
                        )
                        return body


async def test_archive_approval_resumes_on_task_success(local_stack: LocalStack) -> None:
    name = new_id("archive")
    arn = await start(
        local_stack,
        "ArchiveStateMachineArn",
        name,
        {"subtopic": "archive-test", "approval_needed": True, "archive": True, "quality": 80},
    )
    request = await take_approval_request(local_stack, name)
    async with local_stack.aws().client("stepfunctions") as sfn:
        assert (await sfn.describe_execution(executionArn=arn))["status"] == "RUNNING"
        await sfn.send_task_success(
            taskToken=request["TaskToken"], output=json.dumps({"approved": True, "comment": "ok"})
        )
    described = await wait_final(local_stack, arn)
    assert described["status"] == "SUCCEEDED"


async def test_archive_approval_fails_on_task_failure(local_stack: LocalStack) -> None:
    name = new_id("archive")
    arn = await start(
        local_stack,
        "ArchiveStateMachineArn",
        name,
        {"subtopic": "archive-test", "approval_needed": True, "archive": True, "quality": 80},
    )
    request = await take_approval_request(local_stack, name)
    async with local_stack.aws().client("stepfunctions") as sfn:
        await sfn.send_task_failure(
            taskToken=request["TaskToken"], error="Rejected", cause="not this file"
        )
    described = await wait_final(local_stack, arn)
    assert described["status"] == "FAILED"
    assert described["error"] == "Rejected"
