"""moto's behaviour stays the same where ``moto_performance`` changed how it does the work."""

from __future__ import annotations

import asyncio
import json
import string
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.session import Session

from notifier.local.moto_performance import (
    describe_missing_files_with_one_class,
    draw_random_strings_at_once,
    list_regions_once,
    parse_templates_with_libyaml,
    receive_from_queues_without_listing_their_attributes,
)
from notifier.local.stack import LocalStack
from tests.local.test_bridges import LAMBDA_TRUST, create_function
from tests.local.test_workflows import history, new_id, wait_final

RETRIED = {
    "StartAt": "Count",
    "States": {
        "Count": {"Type": "Pass", "Result": 1, "ResultPath": "$.counted", "Next": "Fail"},
        "Fail": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName": "${function}", "Payload": {"raise": True}},
            "Retry": [
                {
                    "ErrorEquals": ["States.ALL"],
                    "IntervalSeconds": 1,
                    "MaxAttempts": 1,
                    "BackoffRate": 1,
                }
            ],
            "End": True,
        },
    },
}


async def test_concurrent_executions_of_one_definition_each_retry_in_full(
    local_stack: LocalStack,
) -> None:
    """The parsed definition is shared by every execution; each execution's retry count is
    its own."""
    function = await create_function(local_stack, "retried")
    definition = json.dumps(RETRIED).replace("${function}", function)
    async with local_stack.aws().client("iam") as iam:
        role = await iam.create_role(
            RoleName=new_id("sfn"), AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST)
        )
    async with local_stack.aws().client("stepfunctions") as sfn:
        machine = await sfn.create_state_machine(
            name=new_id("retried"), definition=definition, roleArn=role["Role"]["Arn"]
        )
        started = await asyncio.gather(
            *(
                sfn.start_execution(stateMachineArn=machine["stateMachineArn"], input="{}")
                for _ in range(4)
            )
        )
    for execution in started:
        described = await wait_final(local_stack, execution["executionArn"])
        assert described["status"] == "FAILED"
        events = await history(local_stack, execution["executionArn"])
        # The first attempt and its one retry, no more and no fewer.
        assert [e["type"] for e in events].count("TaskScheduled") == 2


async def test_fifo_queues_still_deduplicate_and_check_what_they_need(
    local_stack: LocalStack,
) -> None:
    async with local_stack.aws().client("sqs") as sqs:
        deduplicated = await sqs.create_queue(
            QueueName=f"{new_id('dedup')}.fifo",
            Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
        )
        for _ in range(2):
            await sqs.send_message(
                QueueUrl=deduplicated["QueueUrl"], MessageBody="same", MessageGroupId="g"
            )
        received = await sqs.receive_message(
            QueueUrl=deduplicated["QueueUrl"], MaxNumberOfMessages=10
        )
        assert [m["Body"] for m in received["Messages"]] == ["same"]

        strict = await sqs.create_queue(
            QueueName=f"{new_id('strict')}.fifo", Attributes={"FifoQueue": "true"}
        )
        with pytest.raises(ClientError, match="MessageDeduplicationId"):
            await sqs.send_message(QueueUrl=strict["QueueUrl"], MessageBody="x", MessageGroupId="g")


async def test_queue_counts_follow_sends_receives_and_delays(local_stack: LocalStack) -> None:
    async with local_stack.aws().client("sqs") as sqs:
        url = (await sqs.create_queue(QueueName=new_id("counted")))["QueueUrl"]
        for n in range(3):
            await sqs.send_message(QueueUrl=url, MessageBody=str(n))
        await sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=60)
        await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=60)
        counts = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    assert {
        name: counts["Attributes"][name]
        for name in (
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        )
    } == {
        "ApproximateNumberOfMessages": "2",
        "ApproximateNumberOfMessagesNotVisible": "1",
        "ApproximateNumberOfMessagesDelayed": "1",
    }


def test_a_definition_is_parsed_once_with_every_heap_key_set() -> None:
    """Executions sharing one parsed program never assign a component's heap key lazily,
    where two threads could give it two names."""
    from moto.stepfunctions.parser.asl.component.component import Component
    from moto.stepfunctions.parser.asl.component.eval_component import EvalComponent
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    from notifier.local.moto_performance import _reachable, parsed_once

    definition = json.dumps(RETRIED).replace(
        "${function}", "arn:aws:lambda:us-east-1:123456789012:function:f"
    )
    parse = parsed_once(AmazonStateLanguageParser.parse)
    program, _ = parse(definition)
    assert parse(definition)[0] is program
    components = [c for c in _reachable(program, Component) if isinstance(c, EvalComponent)]
    # The program, its states, the Task's resource, parameters and retrier, and more.
    assert len(components) > 10
    assert all(vars(c).get("_EvalComponent__heap_key") for c in components)


def invoking(resource: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    task: dict[str, Any] = {"Type": "Task", "Resource": resource, "End": True}
    if parameters is not None:
        task["Parameters"] = parameters
    return {"StartAt": "Invoke", "States": {"Invoke": task}}


async def run_once(stack: LocalStack, definition: dict[str, Any], name: str) -> dict[str, Any]:
    async with stack.aws().client("iam") as iam:
        role = await iam.create_role(
            RoleName=new_id("sfn"), AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST)
        )
    async with stack.aws().client("stepfunctions") as sfn:
        machine = await sfn.create_state_machine(
            name=new_id(name), definition=json.dumps(definition), roleArn=role["Role"]["Arn"]
        )
        started = await sfn.start_execution(
            stateMachineArn=machine["stateMachineArn"], input=json.dumps({"n": 1})
        )
    return await wait_final(stack, started["executionArn"])


async def test_lambda_tasks_get_what_the_invoke_api_answers(local_stack: LocalStack) -> None:
    function = await create_function(local_stack, "tasks")
    async with local_stack.aws().client("lambda") as awslambda:
        arn = (await awslambda.get_function(FunctionName=function))["Configuration"]["FunctionArn"]

    plain = await run_once(local_stack, invoking(arn), "plain")
    assert plain["status"] == "SUCCEEDED"
    assert json.loads(plain["output"]) == {
        "greeting": "tasks",
        "function": function,
        "event": {"n": 1},
    }

    integration = await run_once(
        local_stack,
        invoking("arn:aws:states:::lambda:invoke", {"FunctionName": function, "Payload.$": "$"}),
        "integration",
    )
    assert integration["status"] == "SUCCEEDED"
    output = json.loads(integration["output"])
    assert output["StatusCode"] == 200
    assert output["Payload"]["event"] == {"n": 1}
    assert set(output) == {"StatusCode", "Payload"}

    failed = await run_once(local_stack, invoking(arn, {"raise": True}), "raised")
    assert failed["status"] == "FAILED"
    assert failed["error"] == "KeyError"
    assert "asked to fail" in json.loads(failed["cause"])["errorMessage"]

    missing = await run_once(local_stack, invoking(f"{arn}-absent"), "missing")
    assert missing["status"] == "FAILED"
    assert missing["error"] == "Exception"
    assert "Function not found" in missing["cause"]


def test_random_strings_keep_their_alphabet_length_and_seed() -> None:
    draw_random_strings_at_once()
    from moto.moto_api._internal.moto_random import MotoRandom

    first, second = MotoRandom(7), MotoRandom(7)
    drawn = [first.get_random_string(52) for _ in range(20)]
    assert drawn == [second.get_random_string(52) for _ in range(20)]
    assert len(set(drawn)) == 20
    assert all(len(s) == 52 and s.isalnum() and s.isascii() for s in drawn)
    assert set("".join(drawn)) - set(string.ascii_letters) != set()  # digits are drawn too
    letters = first.get_random_string(200, include_digits=False, lower_case=True)
    assert set(letters) <= set(string.ascii_lowercase)
    hex_id = first.get_random_hex(64)
    assert len(hex_id) == 64 and set(hex_id) <= set(string.hexdigits.lower())


def test_region_lists_are_botocore_s_own_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every list is the one botocore gives, in every partition, for unknown services and
    partitions too; a new session reads no service model for a service already listed."""
    questions = [
        (service, partition, non_regional)
        for service in ("ec2", "sqs", "iot-data", "s3", "no-such-service")
        for partition in ("aws", "aws-cn", "aws-us-gov", "no-such-partition")
        for non_regional in (False, True)
    ]
    expected = {q: Session().get_available_regions(*q) for q in questions}
    assert expected["ec2", "aws", False] and expected["sqs", "aws-cn", False]
    # Restored when the test ends: the patch is for the endpoint's process.
    monkeypatch.setattr(Session, "get_available_regions", Session.get_available_regions)
    list_regions_once()
    service_models_read: list[str] = []
    read_service_model = Session.get_service_data

    def counted(self: Session, service_name: str, api_version: str | None = None) -> Any:
        service_models_read.append(service_name)
        return read_service_model(self, service_name, api_version)

    monkeypatch.setattr(Session, "get_service_data", counted)
    assert {q: Session().get_available_regions(*q) for q in questions} == expected
    assert sorted(service_models_read) == sorted(
        ["ec2", "sqs", "iot-data", "s3", "no-such-service"] * 2  # regional or not
    )
    listed = Session().get_available_regions("ec2", partition_name="aws-cn")
    listed.clear()  # the caller's own copy
    assert (
        Session().get_available_regions("ec2", partition_name="aws-cn")
        == expected["ec2", "aws-cn", False]
    )
    assert len(service_models_read) == 10


def test_receiving_stops_at_an_expired_message_reading_no_queue_attributes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from moto.sqs.models import Queue, SQSBackend

    def received() -> list[str]:
        backend = SQSBackend("us-east-1", "123456789012")
        backend.create_queue("retained", MessageRetentionPeriod="60")
        for body in ("fresh", "expired", "after"):
            backend.send_message("retained", body)
        queue = backend.get_queue("retained")
        next(m for m in queue._messages if m.body == "expired").sent_timestamp -= 61_000
        monkeypatch.setattr(Queue, "attributes", counted_attributes)
        try:
            messages = backend.receive_message("retained", 10, 0, 30)
        finally:
            monkeypatch.setattr(Queue, "attributes", all_attributes)
        return [m.body for m in messages]

    all_attributes = vars(Queue)["attributes"]
    attribute_reads: list[Queue] = []
    counted_attributes = property(
        lambda queue: attribute_reads.append(queue) or all_attributes.fget(queue)
    )
    as_moto_does = received()
    assert as_moto_does == ["fresh"] and attribute_reads  # moto stops at the expired one
    # Restored when the test ends: the patch is for the endpoint's process.
    monkeypatch.setattr(
        SQSBackend,
        "is_message_valid_based_on_retention_period",
        SQSBackend.is_message_valid_based_on_retention_period,
    )
    receive_from_queues_without_listing_their_attributes()
    attribute_reads.clear()
    assert received() == as_moto_does
    assert not attribute_reads


def test_a_missing_file_is_explained_by_one_class_for_every_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As in flask's debug mode: a file asked for that came as a form field is explained,
    any other is a plain KeyError; the request explained is each request's own."""
    import flask
    from flask import debughelpers
    from werkzeug.datastructures import ImmutableMultiDict

    # Restored when the test ends: the patch is for the endpoint's process.
    monkeypatch.setattr(
        debughelpers, "attach_enctype_error_multidict", debughelpers.attach_enctype_error_multidict
    )
    describe_missing_files_with_one_class()
    app = flask.Flask(__name__)
    app.debug = True
    classes: list[type] = []

    @app.post("/")
    def upload() -> str:
        flask.request.get_data(parse_form_data=True)
        classes.append(type(flask.request.files))
        with pytest.raises(KeyError) as absent:
            flask.request.files["absent"]
        assert not isinstance(absent.value, debughelpers.DebugFilesKeyError)
        with pytest.raises(debughelpers.DebugFilesKeyError) as explained:
            flask.request.files["upload"]
        return str(explained.value)

    client = app.test_client()
    for name in ("first.txt", "second.txt"):
        answer = client.post("/", data={"upload": name})
        assert 'enctype="multipart/form-data"' in answer.text
        assert f"This was submitted: '{name}'" in answer.text
    assert classes[0] is classes[1]
    assert issubclass(classes[0], ImmutableMultiDict)
    assert classes[0].__name__ == "ImmutableMultiDict"


def test_templates_read_in_c_are_what_moto_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stack's template, as YAML with its tags and as the JSON a deployment sends, reads
    the same; what the C parser refuses is moto's to answer, JSON fallback included."""
    import yaml
    from moto.cloudformation.models import Stack

    from notifier.ops.package import load_template, package_template

    template_path = Path(__file__).resolve().parents[2] / "statemachines" / "template.yaml"
    packaged, _ = package_template(load_template(template_path), template_path.parent, "b")
    templates = {
        "yaml": template_path.read_text(encoding="utf-8"),
        "json": json.dumps(packaged),
        "tabbed json": '{\t"Resources": {}}',  # not YAML (a tab): moto reads it as JSON
    }
    as_moto_reads = {name: Stack.parse_template(text) for name, text in templates.items()}
    assert as_moto_reads["yaml"]["Resources"] and as_moto_reads["json"]["Resources"]
    # Restored when the test ends: the patch is for the endpoint's process.
    monkeypatch.setattr(Stack, "parse_template", Stack.parse_template)
    parse_templates_with_libyaml()
    python_reads: list[object] = []
    read_in_python = yaml.reader.Reader.__init__

    def counted(self: Any, stream: Any) -> None:
        python_reads.append(stream)
        read_in_python(self, stream)

    monkeypatch.setattr(yaml.reader.Reader, "__init__", counted)
    assert {name: Stack.parse_template(text) for name, text in templates.items()} == as_moto_reads
    assert python_reads == [templates["tabbed json"]]
    with pytest.raises(json.JSONDecodeError):  # neither YAML nor JSON: as moto answers it
        Stack.parse_template("Resources: [")
