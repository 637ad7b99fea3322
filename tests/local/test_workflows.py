"""The five workflows, deployed by `LocalStack` from the real template, run end to end."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError

from notifier.local.stack import LocalStack
from tests.support.eventually import eventually
from tests.support.mqtt import MqttRecorder

FINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}
LAMBDA_OUTCOMES = {"LambdaFunctionSucceeded", "LambdaFunctionFailed", "LambdaFunctionTimedOut"}
PROCESSA_STEPS = [f"step-{step}" for step in "abcdef"]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def start(stack: LocalStack, machine: str, name: str, payload: dict[str, Any]) -> str:
    async with stack.aws().client("stepfunctions") as sfn:
        response = await sfn.start_execution(
            stateMachineArn=stack.outputs[machine], name=name, input=json.dumps(payload)
        )
    return str(response["executionArn"])


async def describe(stack: LocalStack, execution_arn: str) -> dict[str, Any]:
    async with stack.aws().client("stepfunctions") as sfn:
        described: dict[str, Any] = await sfn.describe_execution(executionArn=execution_arn)
    return described


async def wait_final(stack: LocalStack, execution_arn: str, timeout: float = 90) -> dict[str, Any]:
    async def ended() -> dict[str, Any] | None:
        described = await describe(stack, execution_arn)
        return described if described["status"] in FINAL else None

    return await eventually(ended, timeout, interval=0.2)


async def history(stack: LocalStack, execution_arn: str) -> list[dict[str, Any]]:
    async with stack.aws().client("stepfunctions") as sfn:
        paginator = sfn.get_paginator("get_execution_history")
        return [
            event
            async for page in paginator.paginate(executionArn=execution_arn)
            for event in page["events"]
        ]


def lambda_attempts(events: list[dict[str, Any]], function: str) -> list[str | None]:
    """The outcome of each invocation of the Lambda function named ``...-function``, in order.

    None when it returned, else the error Step Functions saw.
    """
    by_id = {event["id"]: event for event in events}
    attempts: list[str | None] = []
    for event in events:
        if event["type"] not in LAMBDA_OUTCOMES:
            continue
        scheduled = event
        while scheduled["type"] != "LambdaFunctionScheduled":
            scheduled = by_id[scheduled["previousEventId"]]
        if scheduled["lambdaFunctionScheduledEventDetails"]["resource"].endswith(f"-{function}"):
            failure = event.get("lambdaFunctionFailedEventDetails") or event.get(
                "lambdaFunctionTimedOutEventDetails"
            )
            attempts.append(failure["error"] if failure else None)
    return attempts


def states_entered(events: list[dict[str, Any]]) -> list[str]:
    return [
        event["stateEnteredEventDetails"]["name"]
        for event in events
        if "stateEnteredEventDetails" in event
    ]


async def first_attempt(stack: LocalStack, execution_arn: str, function: str) -> str | None:
    """The outcome of the first invocation of ``function``, once there is one."""

    async def attempts() -> list[str | None]:
        return lambda_attempts(await history(stack, execution_arn), function)

    return (await eventually(attempts, 30, interval=0.1))[0]


async def put_object(stack: LocalStack, key: str, data: dict[str, Any]) -> None:
    async with stack.aws().client("s3") as s3:
        await s3.put_object(
            Bucket=stack.outputs["ProcessDataBucketName"],
            Key=key,
            Body=json.dumps(data).encode(),
            ServerSideEncryption="AES256",
        )


async def read_object(stack: LocalStack, key: str) -> dict[str, Any]:
    async with stack.aws().client("s3") as s3:
        response = await s3.get_object(Bucket=stack.outputs["ProcessDataBucketName"], Key=key)
        async with response["Body"] as body:
            data: dict[str, Any] = json.loads(await body.read())
            return data


async def get_item(stack: LocalStack, table: str, key: dict[str, str]) -> dict[str, Any]:
    """One DynamoDB item as plain Python values; ``table`` names a stack output."""
    async with stack.aws().client("dynamodb") as dynamodb:
        response = await dynamodb.get_item(
            TableName=stack.outputs[table], Key={name: {"S": value} for name, value in key.items()}
        )
    deserializer = TypeDeserializer()
    return {name: deserializer.deserialize(value) for name, value in response["Item"].items()}


@asynccontextmanager
async def subscribed_queue(stack: LocalStack, topic_output: str) -> AsyncIterator[tuple[Any, str]]:
    """An SQS client and a new queue subscribed (raw delivery) to the stack's topic named by
    its output ``topic_output``: what the topic publishes, readable by a test."""
    async with stack.aws().client("sqs") as sqs, stack.aws().client("sns") as sns:
        name = new_id(topic_output.removesuffix("TopicArn").lower())
        queue_url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
        attributes = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        await sns.subscribe(
            TopicArn=stack.outputs[topic_output],
            Protocol="sqs",
            Endpoint=attributes["Attributes"]["QueueArn"],
            Attributes={"RawMessageDelivery": "true"},
        )
        yield sqs, queue_url


async def take_message(sqs: Any, queue_url: str, wanted: Callable[[Any], bool]) -> Any:
    """The first message body (JSON) that ``wanted`` accepts, deleted from the queue.

    Other messages stay in the queue for the tests they belong to.
    """
    async with asyncio.timeout(60):
        while True:
            received = await sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=0
            )
            for message in received.get("Messages", []):
                body = json.loads(message["Body"])
                if wanted(body):
                    await sqs.delete_message(
                        QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"]
                    )
                    return body


SENTINEL = {"sentinel": True}


class Notifications:
    """Completion notifications published under one subtopic, by execution name: the
    workflow's own and the status forwarder's alike, each one a message on the instance's
    connection."""

    def __init__(self, stack: LocalStack, mqtt: MqttRecorder, status: MqttRecorder, prefix: str):
        self._stack = stack
        self._mqtt = mqtt
        self._status = status
        self._prefix = prefix
        self._received: defaultdict[str, list[Any]] = defaultdict(list)
        self._sentinels: defaultdict[str, int] = defaultdict(int)

    def _drain(self) -> None:
        while not self._mqtt.messages.empty():
            self._record(*self._mqtt.messages.get_nowait())

    def _record(self, topic: str, message: Any) -> None:
        if message == SENTINEL:
            self._sentinels[topic] += 1
        else:
            self._received[topic].append(message)

    async def all_of(self, name: str, machine_arn: str) -> list[Any]:
        """Every message on ``name``'s instance topic, once the status forwarder is done
        with its end: its status (it publishes that last) has arrived, then a sentinel
        published after it, by the one publisher every publish goes through (the broker
        delivers one publisher's messages in order)."""
        status_topic = (
            f"{self._stack.settings.topic_root}/status/{machine_arn.split(':')[-2]}/{name}"
        )
        while (await self._status.on_topic(status_topic))["status"] not in FINAL:
            pass
        topic = f"{self._prefix}/{name}"
        async with self._stack.aws().client("iot-data") as iot:
            await iot.publish(topic=topic, qos=1, payload=json.dumps(SENTINEL).encode())
        async with asyncio.timeout(30):
            while not self._sentinels[topic]:
                self._record(*await self._mqtt.next(30))
        return self.published(name)

    def published(self, name: str) -> list[Any]:
        """What has arrived for ``name`` so far."""
        self._drain()
        return list(self._received[f"{self._prefix}/{name}"])

    async def of(self, name: str, timeout: float = 10) -> dict[str, Any]:
        """The one notification of the execution ``name``."""
        topic = f"{self._prefix}/{name}"
        try:
            async with asyncio.timeout(timeout):
                while not self._received[topic]:
                    self._record(*await self._mqtt.next(timeout))
        except TimeoutError:
            raise AssertionError(f"nothing was published to {topic}") from None
        messages = self.published(name)
        assert len(messages) == 1, f"expected one notification on {topic}, got {messages}"
        notification: dict[str, Any] = messages[0]
        return notification


def assert_notification_matches(notification: dict[str, Any], described: dict[str, Any]) -> None:
    """The notification reports the execution as DescribeExecution does."""
    assert notification["txnId"] == described["name"]
    assert notification["executionArn"] == described["executionArn"]
    assert notification["stateMachine"] == described["stateMachineArn"].rsplit(":", 1)[1]
    assert notification["status"] == described["status"]
    if described["status"] == "SUCCEEDED":
        assert notification["output"] == json.loads(described["output"])
        assert "error" not in notification
    else:
        assert notification["error"] == described["error"]
        assert notification.get("cause") == described.get("cause")
        assert "output" not in notification


@dataclass
class Finished:
    described: dict[str, Any]
    notification: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.described["status"])

    @property
    def output(self) -> Any:
        return json.loads(self.described["output"])


@dataclass
class Execution:
    stack: LocalStack
    name: str
    arn: str
    notifications: Notifications

    async def finish(self) -> Finished:
        """Wait for the end and its one notification: the workflow's own for a success,
        the status forwarder's for any other end."""
        described = await wait_final(self.stack, self.arn)
        notification = await self.notifications.of(self.name)
        assert_notification_matches(notification, described)
        everything = await self.notifications.all_of(self.name, self.arn)
        assert everything == [notification], "one message per completion"
        published_by = notification.get("publishedBy")
        if described["status"] == "SUCCEEDED":
            assert published_by is None, notification
        else:
            assert published_by == "status-forwarder", notification
        return Finished(described, notification)


@asynccontextmanager
async def started(
    stack: LocalStack, machine: str, payload: dict[str, Any], name: str | None = None
) -> AsyncIterator[Execution]:
    """An execution of ``machine`` (a stack output), listened to from before it starts."""
    name = name or new_id(machine.removesuffix("StateMachineArn").lower())
    subtopic = payload.get("subtopic", "default")
    prefix = f"{stack.settings.topic_root}/{subtopic}"
    async with MqttRecorder(stack, subtopic) as mqtt, MqttRecorder(stack, None) as status:
        arn = await start(stack, machine, name, payload)
        yield Execution(stack, name, arn, Notifications(stack, mqtt, status, prefix))


async def run(
    stack: LocalStack, machine: str, payload: dict[str, Any], name: str | None = None
) -> Finished:
    async with started(stack, machine, payload, name) as execution:
        return await execution.finish()


# ---------------------------------------------------------------- ProcessA


async def test_processa_runs_steps_a_to_f_then_downstream(local_stack: LocalStack) -> None:
    txn = new_id("txn")
    await put_object(local_stack, txn, {"foo": "foo val", "bar": "bar val"})
    payload = {"processData": txn, "subtopic": new_id("sub")}
    async with started(local_stack, "ProcessAStateMachineArn", payload, txn) as execution:
        finished = await execution.finish()
        data = await read_object(local_stack, txn)
        downstream_arn = data["step-f-output"]["downstreamExecutionArn"]
        downstream = await wait_final(local_stack, downstream_arn)
        downstream_notification = await execution.notifications.of(f"{txn}-downstream")

    assert finished.status == "SUCCEEDED", finished.described
    assert finished.output == {"processData": txn}
    assert [key for key in data if key.startswith("step-")] == [
        f"{step}-output" for step in PROCESSA_STEPS
    ]
    assert (data["foo"], data["bar"]) == ("foo val", "bar val")
    assert data["step-a-output"]["stepAOutput1"] == "a1"
    assert data["step-b-output"] == {"property1": "p1", "property2": "p2"}
    assert data["step-c-output"] == {"cProperty": "i like c"}
    assert data["step-d-output"] == {"d": "d output"}
    assert data["step-e-output"] == {"e": "e output"}

    assert downstream["status"] == "SUCCEEDED", downstream
    assert downstream["stateMachineArn"] == local_stack.outputs["DownstreamStateMachineArn"]
    assert json.loads(downstream["input"])["parentExecutionArn"] == execution.arn
    assert_notification_matches(downstream_notification, downstream)


async def test_processa_without_subtopic_notifies_under_default(local_stack: LocalStack) -> None:
    txn = new_id("txn")
    await put_object(local_stack, txn, {})
    finished = await run(local_stack, "ProcessAStateMachineArn", {"processData": txn}, txn)
    assert finished.status == "SUCCEEDED", finished.described
    assert finished.notification["txnId"] == txn  # received on notifier/default/<txn>


async def test_processa_retries_until_the_process_data_is_readable(
    local_stack: LocalStack,
) -> None:
    txn = new_id("txn")
    payload = {"processData": txn, "subtopic": new_id("sub")}
    async with started(local_stack, "ProcessAStateMachineArn", payload, txn) as execution:
        first = await first_attempt(local_stack, execution.arn, "processa-step-a")
        await put_object(local_stack, txn, {})
        finished = await execution.finish()

    assert first == "S3DataPreconditionError"
    assert finished.status == "SUCCEEDED", finished.described
    *retried, last = lambda_attempts(await history(local_stack, execution.arn), "processa-step-a")
    assert retried and set(retried) == {"S3DataPreconditionError"}
    assert last is None
    assert "step-f-output" in await read_object(local_stack, txn)


async def test_processa_gives_up_when_the_process_data_never_appears(
    local_stack: LocalStack,
) -> None:
    txn = new_id("txn")
    payload = {"processData": txn, "subtopic": new_id("sub")}
    finished = await run(local_stack, "ProcessAStateMachineArn", payload, txn)

    assert finished.status == "FAILED"
    assert finished.described["error"] == "S3DataPreconditionError"
    attempts = lambda_attempts(
        await history(local_stack, finished.described["executionArn"]), "processa-step-a"
    )
    assert attempts == ["S3DataPreconditionError"] * 4  # the first attempt and 3 retries


@pytest.mark.parametrize(("asked_in", "failing"), [("input", "c"), ("process data", "e")])
async def test_processa_forced_failure(
    local_stack: LocalStack, asked_in: str, failing: str
) -> None:
    step = f"step-{failing}"
    txn = new_id("txn")
    payload = {"processData": txn, "subtopic": new_id("sub")}
    data = {"fail": step} if asked_in == "process data" else {}
    if asked_in == "input":
        payload["fail"] = step
    await put_object(local_stack, txn, data)
    finished = await run(local_stack, "ProcessAStateMachineArn", payload, txn)

    assert finished.status == "FAILED"
    assert finished.described["error"] == "ForcedFailure"
    cause = json.loads(finished.described["cause"])
    assert cause["errorType"] == "ForcedFailure"
    assert step in cause["errorMessage"]
    assert finished.notification["error"] == "ForcedFailure"

    events = await history(local_stack, finished.described["executionArn"])
    assert lambda_attempts(events, f"processa-{step}") == ["ForcedFailure"]  # not retried
    index = PROCESSA_STEPS.index(step)
    done, after = PROCESSA_STEPS[:index], PROCESSA_STEPS[index + 1]
    assert lambda_attempts(events, f"processa-{after}") == []
    assert set(await read_object(local_stack, txn)) == set(data) | {f"{s}-output" for s in done}


# ---------------------------------------------------------------- Hello


async def test_hello_answers_with_taskresult(local_stack: LocalStack) -> None:
    subtopic = new_id("sub")
    finished = await run(
        local_stack, "HelloStateMachineArn", {"thekey": "thevalue", "subtopic": subtopic}
    )
    assert finished.status == "SUCCEEDED", finished.described
    assert finished.output == {
        "thekey": "thevalue",
        "subtopic": subtopic,
        "taskresult": "Hello 102 Class",
    }
    events = await history(local_stack, finished.described["executionArn"])
    assert "Wait" not in states_entered(events)


async def test_hello_waits_when_asked(local_stack: LocalStack) -> None:
    finished = await run(local_stack, "HelloStateMachineArn", {"waitSeconds": 1})
    assert finished.status == "SUCCEEDED", finished.described
    assert finished.output["taskresult"] == "Hello 102 Class"
    assert finished.output["subtopic"] == "default"
    entered = states_entered(await history(local_stack, finished.described["executionArn"]))
    assert entered.index("Wait") < entered.index("SayHello")


# ---------------------------------------------------------------- QC


async def test_qc_runs_the_checks_records_and_publishes_the_summary(
    local_stack: LocalStack,
) -> None:
    group = new_id("group")
    async with subscribed_queue(local_stack, "QCSummaryTopicArn") as (sqs, queue_url):
        payload = {"GroupID": group, "StreamID": "streamA", "subtopic": new_id("sub")}
        finished = await run(local_stack, "QCStateMachineArn", payload)
        published = await take_message(sqs, queue_url, lambda body: body["GroupID"] == group)

    assert finished.status == "SUCCEEDED", finished.described
    summary = finished.output
    assert (summary["GroupID"], summary["StreamID"]) == (group, "streamA")
    assert summary["TotalPass"] is True
    assert summary["Checks"] == {"QC1": True, "QC2": True, "QC3": True}
    assert published == summary
    row = await get_item(
        local_stack, "QCSummaryTableName", {"GroupID": group, "StartTime": summary["StartTime"]}
    )
    assert row["StreamID"] == "streamA"
    assert (row["QC1Pass"], row["QC2Pass"], row["QC3Pass"]) == (True, True, True)
    assert row["TotalPass"] is True
    assert row["Status"] == "COMPLETE"


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"StreamID": "streamA"}, "GroupID"), ({"GroupID": "group1", "StreamID": 12}, "StreamID")],
    ids=["no GroupID", "numeric StreamID"],
)
async def test_qc_rejects_invalid_input(
    local_stack: LocalStack, payload: dict[str, Any], field: str
) -> None:
    finished = await run(local_stack, "QCStateMachineArn", {**payload, "subtopic": new_id("sub")})
    assert finished.status == "FAILED"
    assert finished.described["error"] == "ValidationError"
    assert field in finished.described["cause"]
    assert finished.notification["error"] == "ValidationError"
    events = await history(local_stack, finished.described["executionArn"])
    assert not [event for event in events if event["type"] == "LambdaFunctionScheduled"]


# ---------------------------------------------------------------- Archive


@pytest.mark.parametrize(
    ("archive", "quality", "action"),
    [(True, 80, "Archived"), (True, 10, "Quality_Fail"), (False, 90, "Unarchivable")],
)
async def test_archive_decides_on_archive_and_quality(
    local_stack: LocalStack, archive: bool, quality: int, action: str
) -> None:
    payload = {"archive": archive, "quality": quality, "subtopic": new_id("sub")}
    finished = await run(local_stack, "ArchiveStateMachineArn", payload)

    assert finished.status == "SUCCEEDED", finished.described
    output = finished.output
    assert output["action"] == action
    assert output["approval"] == {"required": False}
    record = await get_item(local_stack, "ArchiveResultsTableName", {"Id": output["id"]})
    assert output["id"] == finished.described["name"]
    assert record["Action"] == action
    assert record["Archive"] is archive
    assert record["Quality"] == quality
    assert record["Approval"] is False
    assert record["Timestamp"] == output["file"]["Timestamp"]


async def approval_request(stack: LocalStack, execution: Execution) -> dict[str, Any]:
    """The approval request of ``execution``, taken off the shared approval queue."""
    async with stack.aws().client("sqs") as sqs:
        request: dict[str, Any] = await take_message(
            sqs,
            stack.outputs["ApprovalQueueUrl"],
            lambda body: body.get("ExecutionArn") == execution.arn,
        )
    assert request["ExecutionName"] == execution.name
    assert (await describe(stack, execution.arn))["status"] == "RUNNING"
    assert execution.notifications.published(execution.name) == []
    return request


@pytest.mark.parametrize(
    ("answer", "action"),
    [({"approved": True, "comment": "looks fine"}, "Archived"), ({"approved": False}, "Rejected")],
    ids=["approved", "rejected"],
)
async def test_archive_waits_for_the_approver(
    local_stack: LocalStack, answer: dict[str, Any], action: str
) -> None:
    payload = {"approval_needed": True, "archive": True, "quality": 75, "subtopic": new_id("sub")}
    async with started(local_stack, "ArchiveStateMachineArn", payload) as execution:
        request = await approval_request(local_stack, execution)
        assert request["File"]["Quality"] == 75
        async with local_stack.aws().client("stepfunctions") as sfn:
            await sfn.send_task_success(taskToken=request["TaskToken"], output=json.dumps(answer))
        finished = await execution.finish()

    assert finished.status == "SUCCEEDED", finished.described
    assert finished.output["action"] == action
    assert finished.output["approval"] == answer
    record = await get_item(local_stack, "ArchiveResultsTableName", {"Id": execution.name})
    assert record["Action"] == action
    assert record["Approval"] is True


async def test_archive_fails_on_send_task_failure(local_stack: LocalStack) -> None:
    payload = {"approval_needed": True, "subtopic": new_id("sub")}
    async with started(local_stack, "ArchiveStateMachineArn", payload) as execution:
        request = await approval_request(local_stack, execution)
        async with local_stack.aws().client("stepfunctions") as sfn:
            await sfn.send_task_failure(
                taskToken=request["TaskToken"], error="ApprovalDenied", cause="nobody home"
            )
        finished = await execution.finish()

    assert finished.status == "FAILED"
    assert finished.described["error"] == "ApprovalDenied"
    assert finished.described.get("cause") == "nobody home"
    assert finished.notification["error"] == "ApprovalDenied"
    assert finished.notification.get("cause") == "nobody home"


async def test_stopping_an_archive_that_waits_for_its_approver_aborts_it(
    local_stack: LocalStack,
) -> None:
    payload = {"approval_needed": True, "subtopic": new_id("sub")}
    async with started(local_stack, "ArchiveStateMachineArn", payload) as execution:
        request = await approval_request(local_stack, execution)
        async with local_stack.aws().client("stepfunctions") as sfn:
            await sfn.stop_execution(executionArn=execution.arn, error="Operator", cause="gone")
        described = await describe(local_stack, execution.arn)
        async with asyncio.timeout(30):
            while described["status"] == "RUNNING":  # noqa: ASYNC110 (nothing to wait on)
                await asyncio.sleep(0.1)
                described = await describe(local_stack, execution.arn)
        # Its wait for the token is over: the token is refused, as AWS refuses it.
        async with local_stack.aws().client("stepfunctions") as sfn:
            with pytest.raises(ClientError) as refused:
                await sfn.send_task_success(taskToken=request["TaskToken"], output="{}")
        (aborted,) = await execution.notifications.all_of(execution.name, execution.arn)

    assert described["status"] == "ABORTED", described
    assert aborted["status"] == "ABORTED" and aborted["publishedBy"] == "status-forwarder"
    assert refused.value.response["Error"]["Code"] in ("TaskTimedOut", "InvalidToken")


# ---------------------------------------------------------------- Express


async def test_hello_express_runs_to_its_end_in_start_sync_execution(
    local_stack: LocalStack,
) -> None:
    subtopic = new_id("sub")
    async with (
        MqttRecorder(local_stack, subtopic) as recorder,
        local_stack.aws().client("stepfunctions") as sfn,
    ):
        name = new_id("express")
        answer = await sfn.start_sync_execution(
            stateMachineArn=local_stack.outputs["HelloExpressStateMachineArn"],
            name=name,
            input=json.dumps({"who": "express", "subtopic": subtopic}),
        )
        assert answer["status"] == "SUCCEEDED", answer
        assert json.loads(answer["output"])["taskresult"] == "Hello 102 Class"
        prefix = local_stack.outputs["HelloExpressStateMachineArn"].replace(
            ":stateMachine:", ":express:"
        )
        assert answer["executionArn"].startswith(f"{prefix}:{name}:")
        assert answer["stopDate"] >= answer["startDate"]
        # Its Notify state published as a Standard one's does.
        message = await recorder.on_topic(f"{local_stack.settings.topic_root}/{subtopic}/{name}")
        assert message["executionArn"] == answer["executionArn"]
        # Express keeps no execution to describe, and a Standard machine has no sync start.
        with pytest.raises(ClientError):
            await sfn.describe_execution(executionArn=answer["executionArn"])
        with pytest.raises(ClientError) as refused:
            await sfn.start_sync_execution(
                stateMachineArn=local_stack.outputs["HelloStateMachineArn"], input="{}"
            )
        assert refused.value.response["Error"]["Code"] == "StateMachineTypeNotSupported"
