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


UNNOTIFIED = {"result": {"r": 1}, "notifyError": {"Error": "E", "Cause": "C"}}


@pytest.mark.parametrize(
    ("status", "detail", "fields"),
    [
        ("SUCCEEDED", {"output": json.dumps(UNNOTIFIED)}, {"output": {"r": 1}}),
        ("FAILED", {"error": "Lambda.Unknown", "cause": "crash"}, {"error": "Lambda.Unknown"}),
        ("TIMED_OUT", {}, {"error": "TIMED_OUT", "cause": ""}),
        ("ABORTED", {"error": "Operator", "cause": "stop"}, {"error": "Operator"}),
    ],
)
def test_a_completion_the_workflow_did_not_publish_reaches_the_instance_topic_and_queue(
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


def test_a_success_the_workflow_published_goes_to_the_queue_only(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=f"{PREFIX}instance-a")["QueueUrl"]
    iot = Recorder()
    event = status_event("SUCCEEDED", output=json.dumps({"r": 1}))
    delivered = forwarder.Forwarder(iot, sqs, "notifier", PREFIX).forward(event)
    assert delivered == {"status": True, "queue": True}
    assert [topic for topic, _ in iot.published] == ["notifier/status/notifier-dev-Hello/0x01"]
    (queued,) = received(sqs, url)
    assert queued["output"] == {"r": 1} and "fetchOutput" not in queued


def test_an_output_too_large_for_iot_goes_as_a_pointer_never_published_whole(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=f"{PREFIX}instance-a")["QueueUrl"]
    iot = Recorder()
    result = {"blob": "x" * forwarder.MAX_PAYLOAD_BYTES}
    output = {"result": result, "notifyError": {"Error": "E", "Cause": "refused"}}
    event = status_event("SUCCEEDED", output=json.dumps(output))
    delivered = forwarder.Forwarder(iot, sqs, "notifier", PREFIX).forward(event)
    assert delivered == {"status": True, "mqtt": True, "queue": True}
    (topic, pointer), _status = iot.published
    assert topic == "notifier/instance-a/0x01"
    assert pointer["fetchOutput"] is True and "output" not in pointer
    assert pointer["executionArn"] == ARN and pointer["status"] == "SUCCEEDED"
    assert received(sqs, url) == [pointer]
    completion = parse_notification(json.dumps(pointer).encode(), "mqtt", "0x01")
    assert completion.fetch_output and completion.output is None


def test_an_output_left_out_of_the_event_is_pointed_to_never_answered_null(sqs: Any) -> None:
    """Whether the workflow published cannot be read from an output that is not there: the
    pointer is published too, and the daemon fetches the output once."""
    iot = Recorder()
    event = status_event("SUCCEEDED", output=None, outputDetails={"included": False})
    delivered = forwarder.Forwarder(iot, sqs, "notifier", PREFIX).forward(event)
    assert delivered == {"status": True, "mqtt": True, "queue": False}
    (_topic, pointer), _status = iot.published
    assert pointer["fetchOutput"] is True and "output" not in pointer


def test_an_event_without_its_input_tells_no_instance(sqs: Any) -> None:
    """The subtopic is in the input: without it, the completion would go to another instance."""
    iot = Recorder()
    event = status_event("FAILED", input=None, inputDetails={"included": False}, error="E")
    delivered = forwarder.Forwarder(iot, sqs, "notifier", PREFIX).forward(event)
    assert delivered == {"status": True}


def test_an_oversize_message_is_never_published(sqs: Any) -> None:
    iot = Recorder()
    relay = forwarder.Forwarder(iot, sqs, "notifier", PREFIX)
    with pytest.raises(forwarder.DeliveryFailed, match="over IoT's limit"):
        relay._publish("notifier/x/y", {"blob": "x" * forwarder.MAX_PAYLOAD_BYTES})
    assert iot.published == []


def test_the_status_feed_carries_one_execution_in_n_with_all_its_statuses(sqs: Any) -> None:
    one_in = 8
    relay = forwarder.Forwarder(Recorder(), sqs, "notifier", PREFIX, status_one_in=one_in)
    fed = 0
    for n in range(800):
        arn = f"{ARN[: -len('0x01')]}txn-{n}"
        events = [
            status_event("RUNNING", executionArn=arn, name=f"txn-{n}"),
            status_event("FAILED", executionArn=arn, name=f"txn-{n}", error="E"),
        ]
        carried = ["status" in relay.forward(event) for event in events]
        assert carried[0] == carried[1]  # an execution's RUNNING and final go together
        fed += carried[0]
    assert 800 / one_in / 2 < fed < 800 / one_in * 2


def test_a_connection_of_an_instance_has_its_topic_and_the_instance_s_queue(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=f"{PREFIX}instance-a")["QueueUrl"]
    iot = Recorder()
    event = status_event("FAILED", input=json.dumps({"subtopic": "instance-a/2"}), error="E")
    delivered = forwarder.Forwarder(iot, sqs, "notifier", PREFIX).forward(event)
    assert delivered == {"status": True, "mqtt": True, "queue": True}
    (topic, message), _ = iot.published
    assert topic == "notifier/instance-a/2/0x01"
    assert received(sqs, url) == [message]


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
        relay.forward(status_event("TIMED_OUT"))
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
