"""Each bridge of the local stack, exercised through the public AWS API as clients see it."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError

from notifier.local.quotas import QuotaSettings
from notifier.local.sfn_status_events import MAX_EVENT_DATA, status_change_detail
from notifier.local.stack import LocalStack
from tests.local.test_workflows import new_id
from tests.support.mqtt import MqttRecorder

HANDLER = """
import os, time

def handler(event, context):
    if event.get("raise"):
        raise KeyError("asked to fail")
    if event.get("sleep"):
        time.sleep(event["sleep"])
    return {"greeting": os.environ["GREETING"], "function": context.function_name, "event": event}
"""


def code_zip(handler: str = HANDLER) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", handler)
    return buffer.getvalue()


LAMBDA_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


async def create_function(
    stack: LocalStack, greeting: str, timeout: int = 3, handler: str = HANDLER
) -> str:
    name = new_id("fn")
    async with stack.aws().client("iam") as iam:
        role = await iam.create_role(
            RoleName=name, AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST)
        )
    async with stack.aws().client("lambda") as awslambda:
        await awslambda.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=role["Role"]["Arn"],
            Handler="app.handler",
            Code={"ZipFile": code_zip(handler)},
            Timeout=timeout,
            Environment={"Variables": {"GREETING": greeting}},
        )
    return name


async def invoke(stack: LocalStack, name: str, event: dict) -> tuple[dict, str | None]:
    async with stack.aws().client("lambda") as awslambda:
        response = await awslambda.invoke(FunctionName=name, Payload=json.dumps(event).encode())
        payload = json.loads(await response["Payload"].read())
    return payload, response.get("FunctionError")


async def test_lambda_runs_deployed_code_with_its_own_environment(local_stack: LocalStack) -> None:
    hello = await create_function(local_stack, "hello")
    bonjour = await create_function(local_stack, "bonjour")
    first, error = await invoke(local_stack, hello, {"n": 1})
    second, _ = await invoke(local_stack, bonjour, {"n": 2})
    assert error is None
    assert first == {"greeting": "hello", "function": hello, "event": {"n": 1}}
    assert second["greeting"] == "bonjour"


async def test_lambda_error_has_aws_error_payload(local_stack: LocalStack) -> None:
    name = await create_function(local_stack, "hi")
    payload, error = await invoke(local_stack, name, {"raise": True})
    assert error is not None
    assert payload["errorType"] == "KeyError"
    assert "asked to fail" in payload["errorMessage"]
    again, error = await invoke(local_stack, name, {})
    assert error is None and again["greeting"] == "hi"


async def test_lambda_timeout_is_enforced(local_stack: LocalStack) -> None:
    name = await create_function(local_stack, "slow", timeout=1)
    payload, error = await invoke(local_stack, name, {"sleep": 5})
    assert error is not None
    assert payload["errorType"] == "Sandbox.Timedout"
    after, error = await invoke(local_stack, name, {})
    assert error is None and after["greeting"] == "slow"


async def test_iot_data_publish_reaches_the_broker(local_stack: LocalStack) -> None:
    subtopic = new_id("iot")
    topic = f"notifier/{subtopic}/x"
    async with MqttRecorder(local_stack, subtopic) as mqtt:
        async with local_stack.aws().client("iot-data") as iot:
            await iot.publish(topic=topic, qos=1, payload=json.dumps({"hello": 1}).encode())
        received = await mqtt.next(timeout=10)
    assert received == (topic, {"hello": 1})


async def test_an_iot_payload_over_the_limit_is_refused_and_never_delivered(
    local_stack: LocalStack,
) -> None:
    subtopic = new_id("iot")
    topic = f"notifier/{subtopic}/x"
    async with MqttRecorder(local_stack, subtopic) as mqtt:
        async with local_stack.aws().client("iot-data") as iot:
            with pytest.raises(ClientError) as refused:
                await iot.publish(
                    topic=topic, qos=1, payload=b"x" * (QuotaSettings().iot_payload + 1)
                )
            await iot.publish(topic=topic, qos=1, payload=b'{"after": 1}')
        received = await mqtt.next(timeout=10)
    assert refused.value.response["Error"]["Code"] == "RequestEntityTooLargeException"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert received == (topic, {"after": 1})


@pytest.mark.parametrize(
    ("input_size", "output_size", "included"),
    [
        (10, 10, (True, True)),
        (10, MAX_EVENT_DATA, (False, False)),  # the output alone is too large
        (MAX_EVENT_DATA // 2, MAX_EVENT_DATA // 2, (False, True)),  # together they are
    ],
)
def test_a_status_event_leaves_out_what_is_too_large_for_it(
    input_size: int, output_size: int, included: tuple[bool, bool]
) -> None:
    now = datetime.now(UTC)
    execution = SimpleNamespace(
        exec_arn="arn:aws:states:us-east-1:123456789012:execution:m:n",
        state_machine=SimpleNamespace(arn="arn:aws:states:us-east-1:123456789012:stateMachine:m"),
        name="n",
        start_date=now,
        stop_date=now,
        input_data={"i": "x" * input_size},
        output={"o": "y" * output_size},
        error=None,
        cause=None,
    )
    detail = status_change_detail(execution, "SUCCEEDED")
    assert (detail["inputDetails"]["included"], detail["outputDetails"]["included"]) == included
    assert (detail["input"] is not None, detail["output"] is not None) == included


async def test_cloudformation_creates_types_moto_skips(local_stack: LocalStack) -> None:
    template = {
        "Resources": {
            "Topic": {"Type": "AWS::SNS::Topic"},
            "Queue": {"Type": "AWS::SQS::Queue"},
            "Subscription": {
                "Type": "AWS::SNS::Subscription",
                "Properties": {
                    "TopicArn": {"Ref": "Topic"},
                    "Protocol": "sqs",
                    "Endpoint": {"Fn::GetAtt": ["Queue", "Arn"]},
                    "RawMessageDelivery": True,
                    "FilterPolicy": {"kind": ["wanted"]},
                    "FilterPolicyScope": "MessageBody",
                },
            },
            "QueuePolicy": {
                "Type": "AWS::SQS::QueuePolicy",
                "Properties": {
                    "Queues": [{"Ref": "Queue"}],
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "sns.amazonaws.com"},
                                "Action": "sqs:SendMessage",
                                "Resource": {"Fn::GetAtt": ["Queue", "Arn"]},
                            }
                        ],
                    },
                },
            },
            "TopicPolicy": {
                "Type": "AWS::SNS::TopicPolicy",
                "Properties": {
                    "Topics": [{"Ref": "Topic"}],
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "events.amazonaws.com"},
                                "Action": "sns:Publish",
                                "Resource": {"Ref": "Topic"},
                            }
                        ],
                    },
                },
            },
        },
        "Outputs": {
            "Topic": {"Value": {"Ref": "Topic"}},
            "Queue": {"Value": {"Ref": "Queue"}},
        },
    }
    stack_name = new_id("bridges")
    aws = local_stack.aws()
    async with aws.client("cloudformation") as cfn:
        await cfn.create_stack(StackName=stack_name, TemplateBody=json.dumps(template))
        stack = (await cfn.describe_stacks(StackName=stack_name))["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}

    async with aws.client("sns") as sns, aws.client("sqs") as sqs:
        await sns.publish(TopicArn=outputs["Topic"], Message=json.dumps({"kind": "unwanted"}))
        await sns.publish(TopicArn=outputs["Topic"], Message=json.dumps({"kind": "wanted"}))
        received = await sqs.receive_message(
            QueueUrl=outputs["Queue"], MaxNumberOfMessages=10, WaitTimeSeconds=2
        )
        queue = await sqs.get_queue_attributes(QueueUrl=outputs["Queue"], AttributeNames=["Policy"])
        topic = await sns.get_topic_attributes(TopicArn=outputs["Topic"])
    assert [json.loads(m["Body"]) for m in received["Messages"]] == [{"kind": "wanted"}]
    assert json.loads(queue["Attributes"]["Policy"])["Statement"][0]["Action"] == "sqs:SendMessage"
    assert json.loads(topic["Attributes"]["Policy"])["Statement"][0]["Action"] == "sns:Publish"


async def test_start_execution_without_name_gets_a_fresh_one(local_stack: LocalStack) -> None:
    async with local_stack.aws().client("stepfunctions") as sfn:
        arns = [
            (
                await sfn.start_execution(
                    stateMachineArn=local_stack.outputs["HelloStateMachineArn"],
                    input=json.dumps({"subtopic": "unnamed"}),
                )
            )["executionArn"]
            for _ in range(2)
        ]
    names = [arn.rsplit(":", 1)[1] for arn in arns]
    assert names[0] != names[1]
    assert all(len(name) == 36 for name in names)


async def test_conditional_writes_at_the_same_moment_let_one_through(
    local_stack: LocalStack,
) -> None:
    """As in AWS: of many conditional writes at once, one succeeds, the others are refused."""
    attempts = 12
    stack = local_stack
    key = new_id("conditional")
    async with stack.aws().client("dynamodb") as dynamodb, stack.aws().client("s3") as s3:
        table = stack.outputs["ApprovalTableName"]
        await dynamodb.put_item(TableName=table, Item={"Id": {"S": key}, "State": {"S": "a"}})

        async def update(i: int) -> bool:
            try:
                await dynamodb.update_item(
                    TableName=table,
                    Key={"Id": {"S": key}},
                    UpdateExpression="SET #s = :b, Winner = :i",
                    ConditionExpression="#s = :a",
                    ExpressionAttributeNames={"#s": "State"},
                    ExpressionAttributeValues={
                        ":a": {"S": "a"}, ":b": {"S": "b"}, ":i": {"N": str(i)},
                    },
                )  # fmt: skip
            except dynamodb.exceptions.ConditionalCheckFailedException:
                return False
            return True

        async def put(i: int) -> bool:
            try:
                await s3.put_object(
                    Bucket=stack.outputs["ProcessDataBucketName"],
                    Key=key,
                    Body=str(i).encode(),
                    IfNoneMatch="*",
                )
            except s3.exceptions.ClientError as exc:
                assert exc.response["Error"]["Code"] == "PreconditionFailed"
                return False
            return True

        assert sum(await asyncio.gather(*(update(i) for i in range(attempts)))) == 1
        assert sum(await asyncio.gather(*(put(i) for i in range(attempts)))) == 1

    async with stack.aws().client("stepfunctions") as sfn:
        machine = stack.outputs["HelloStateMachineArn"]

        async def start(i: int) -> str | None:
            try:
                started = await sfn.start_execution(
                    stateMachineArn=machine, name=key, input=json.dumps({"attempt": i})
                )
            except sfn.exceptions.ExecutionAlreadyExists:
                return None
            return str(started["executionArn"])

        started = [arn for arn in await asyncio.gather(*(start(i) for i in range(attempts))) if arn]
        assert len(started) == 1
        listed = await sfn.list_executions(stateMachineArn=machine)
        assert [e["name"] for e in listed["executions"]].count(key) == 1


async def test_an_event_a_target_cannot_take_goes_to_its_dead_letter_queue(
    local_stack: LocalStack,
) -> None:
    """As EventBridge does: the event goes to that target's dead-letter queue, with the
    error, the rule and the target, and the rule's other targets still get it."""
    rule, gone, kept, dead_letter = (new_id(kind) for kind in ("rule", "gone", "kept", "dlq"))
    queue_arn = "arn:aws:sqs:us-east-1:123456789012:{}".format
    aws = local_stack.aws()
    async with aws.client("sqs") as sqs, aws.client("events") as events:
        kept_url = (await sqs.create_queue(QueueName=kept))["QueueUrl"]
        dead_letter_url = (await sqs.create_queue(QueueName=dead_letter))["QueueUrl"]
        created = await events.put_rule(Name=rule, EventPattern=json.dumps({"source": [rule]}))
        targets = [  # the queue `gone` does not exist (any more)
            {
                "Id": "gone",
                "Arn": queue_arn(gone),
                "DeadLetterConfig": {"Arn": queue_arn(dead_letter)},
            },
            {"Id": "kept", "Arn": queue_arn(kept)},
        ]
        await events.put_targets(Rule=rule, Targets=targets)
        entry = {"Source": rule, "DetailType": "test", "Detail": json.dumps({"n": 1})}
        await events.put_events(Entries=[entry])
        # Delivered while PutEvents was answered: the messages are there.
        (delivered,) = (await sqs.receive_message(QueueUrl=kept_url))["Messages"]
        (undelivered,) = (
            await sqs.receive_message(QueueUrl=dead_letter_url, MessageAttributeNames=["All"])
        )["Messages"]
    assert json.loads(delivered["Body"])["detail"] == {"n": 1}
    event = json.loads(undelivered["Body"])
    assert (event["source"], event["detail"]) == (rule, {"n": 1})
    attributes = {k: v["StringValue"] for k, v in undelivered["MessageAttributes"].items()}
    assert attributes["RULE_ARN"] == created["RuleArn"]
    assert attributes["TARGET_ARN"] == queue_arn(gone)
    assert attributes["ERROR_CODE"] == "QueueDoesNotExist"
    assert attributes["ERROR_MESSAGE"]
