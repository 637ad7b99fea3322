"""The status forwarder's handler, called directly with Step Functions' events."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from moto import mock_aws

from notifier.sources import parse_notification
from tests.statemachines.test_functions import REGION, aws_env, load_function_module  # noqa: F401

forwarder = load_function_module("forwarder")

ARN = "arn:aws:states:us-east-1:123456789012:execution:notifier-dev-Hello:0x01"
MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:notifier-dev-Hello"
PREFIX = "notifier-dev-completions-"


def status_event(status: str, **detail: Any) -> dict[str, Any]:
    final = status != "RUNNING"
    return {
        "source": "aws.states",
        "detail-type": "Step Functions Execution Status Change",
        "time": "2026-01-01T00:00:02Z",
        "detail": {
            "executionArn": ARN,
            "stateMachineArn": MACHINE,
            "name": "0x01",
            "status": status,
            "startDate": 1767225600000,
            "stopDate": 1767225602000 if final else None,
            "input": json.dumps({"subtopic": "instance-a", "x": 1}),
            "output": None,
            "error": None,
            "cause": None,
            **detail,
        },
    }


class Recorder:
    def __init__(self) -> None:
        self.published: list[tuple[str, Any]] = []

    def publish(self, topic: str, qos: int, payload: bytes) -> None:
        self.published.append((topic, json.loads(payload)))


@pytest.fixture
def sqs(aws_env: None) -> Any:  # noqa: F811
    with mock_aws():
        yield boto3.client("sqs", region_name=REGION)


def received(sqs: Any, url: str) -> list[Any]:
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


@pytest.mark.parametrize(
    ("status", "detail", "fields"),
    [
        ("SUCCEEDED", {"output": json.dumps({"r": 1})}, {"output": {"r": 1}}),
        ("FAILED", {"error": "Lambda.Unknown", "cause": "crash"}, {"error": "Lambda.Unknown"}),
        ("TIMED_OUT", {}, {"error": "TIMED_OUT", "cause": ""}),
        ("ABORTED", {"error": "Operator", "cause": "stop"}, {"error": "Operator"}),
    ],
)
def test_a_final_status_reaches_the_instance_topic_and_queue(
    sqs: Any, status: str, detail: dict[str, Any], fields: dict[str, Any]
) -> None:
    url = sqs.create_queue(QueueName=f"{PREFIX}instance-a")["QueueUrl"]
    iot = Recorder()
    delivered = forwarder.Forwarder(iot, sqs, "notifier", PREFIX).forward(
        status_event(status, **detail)
    )
    assert delivered == {"status": True, "mqtt": True, "queue": True}
    (topic, message), (status_topic, dashboard) = iot.published
    assert status_topic == "notifier/status/notifier-dev-Hello/0x01"
    assert dashboard["status"] == status
    assert topic == "notifier/instance-a/0x01"
    assert message["finishedAt"] == "2026-01-01T00:00:02Z"
    assert message.items() >= {"txnId": "0x01", "status": status, **fields}.items()
    assert received(sqs, url) == [message]
    # The daemon reads it as it reads the workflows' own notifications.
    completion = parse_notification(json.dumps(message).encode(), "sqs", "0x01")
    assert completion.status == status
    assert completion.stop_date is not None


def test_an_output_left_out_of_the_event_is_said_to_be_left_out(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=f"{PREFIX}instance-a")["QueueUrl"]
    event = status_event("SUCCEEDED", outputDetails={"included": False})
    forwarder.Forwarder(Recorder(), sqs, "notifier", PREFIX).forward(event)
    (message,) = received(sqs, url)
    assert (message["output"], message["outputIncluded"]) == (None, False)
    completion = parse_notification(json.dumps(message).encode(), "sqs", "0x01")
    assert completion.output_left_out
    included = status_event("SUCCEEDED", output="{}", outputDetails={"included": True})
    assert "outputIncluded" not in forwarder.completion(included["detail"])


def test_running_goes_to_dashboards_only(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=f"{PREFIX}instance-a")["QueueUrl"]
    iot = Recorder()
    delivered = forwarder.Forwarder(iot, sqs, "notifier", PREFIX).forward(status_event("RUNNING"))
    assert delivered == {"status": True}
    assert [topic for topic, _ in iot.published] == ["notifier/status/notifier-dev-Hello/0x01"]
    assert received(sqs, url) == []


def test_without_a_queue_or_a_subtopic(sqs: Any) -> None:
    iot = Recorder()
    event = status_event("ABORTED", input=json.dumps({"x": 1}))
    delivered = forwarder.Forwarder(iot, sqs, "notifier", PREFIX).forward(event)
    assert delivered == {"status": True, "mqtt": True, "queue": False}
    assert iot.published[0][0] == "notifier/default/0x01"


class Down:
    def publish(self, **kwargs: Any) -> None:
        from botocore.exceptions import EndpointConnectionError

        raise EndpointConnectionError(endpoint_url="https://iot")


def test_a_failed_publish_does_not_stop_the_queue_message_and_fails_the_invocation(
    sqs: Any,
) -> None:
    url = sqs.create_queue(QueueName=f"{PREFIX}instance-a")["QueueUrl"]
    relay = forwarder.Forwarder(Down(), sqs, "notifier", PREFIX)
    with pytest.raises(forwarder.ForwardingFailed) as failed:
        relay.forward(status_event("SUCCEEDED", output="{}"))
    # Raised once every delivery was tried: so Lambda retries the event, then sends it to
    # the dead-letter queue.
    assert len(received(sqs, url)) == 1
    assert "publish to notifier/instance-a/0x01 failed" in str(failed.value)
    assert "publish to notifier/status/notifier-dev-Hello/0x01 failed" in str(failed.value)
    assert ARN in str(failed.value)


def test_a_failed_queue_message_does_not_stop_the_publishes_and_fails_the_invocation(
    sqs: Any,
) -> None:
    from botocore.exceptions import ClientError

    class Refusing:
        def __getattr__(self, name: str) -> Any:
            return getattr(sqs, name)

        def send_message(self, **kwargs: Any) -> None:
            raise ClientError({"Error": {"Code": "KMS.AccessDeniedException"}}, "SendMessage")

    sqs.create_queue(QueueName=f"{PREFIX}instance-a")
    iot = Recorder()
    with pytest.raises(forwarder.ForwardingFailed, match="queue for instance-a"):
        forwarder.Forwarder(iot, Refusing(), "notifier", PREFIX).forward(
            status_event("FAILED", error="E", cause="C")
        )
    assert [topic for topic, _ in iot.published] == [
        "notifier/instance-a/0x01",
        "notifier/status/notifier-dev-Hello/0x01",
    ]


def test_the_handler_lets_the_failure_out(sqs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """What Lambda sees: the handler raises, and the invocation counts as failed."""
    relay = forwarder.Forwarder(Down(), sqs, "notifier", PREFIX)
    monkeypatch.setattr(forwarder, "warm_forwarder", lambda: relay)
    with pytest.raises(forwarder.ForwardingFailed):
        forwarder.handler(status_event("RUNNING"))


def test_a_queue_is_looked_up_once_and_again_after_it_is_gone(sqs: Any) -> None:
    lookups: list[str] = []

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(sqs, name)

        def get_queue_url(self, **kwargs: Any) -> Any:
            lookups.append(kwargs["QueueName"])
            return sqs.get_queue_url(**kwargs)

    url = sqs.create_queue(QueueName=f"{PREFIX}instance-a")["QueueUrl"]
    relay = forwarder.Forwarder(Recorder(), Counting(), "notifier", PREFIX)
    for _ in range(3):
        assert relay.forward(status_event("SUCCEEDED", output="{}"))["queue"]
    assert lookups == [f"{PREFIX}instance-a"] and len(received(sqs, url)) == 3
    sqs.delete_queue(QueueUrl=url)
    assert not relay.forward(status_event("SUCCEEDED", output="{}"))["queue"]
    url = sqs.create_queue(QueueName=f"{PREFIX}instance-a")["QueueUrl"]
    assert relay.forward(status_event("SUCCEEDED", output="{}"))["queue"]
    assert len(lookups) == 2 and len(received(sqs, url)) == 1
