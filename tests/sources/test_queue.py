"""The instance's completion queue: created at start, read, deleted; poison messages go to
the dead-letter queue; duplicates are no-ops; an unreachable SQS stops nothing, and the
loop outlives a failing inner call (AWS's or any other)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from notifier.app.state import SQS
from notifier.daemon import Daemon
from notifier.local.stack import LocalStack
from notifier.requests.ids import new_txn_id
from notifier.requests.waiters import Registry, Status, Transaction
from notifier.sources.queue import LAST_SEEN_TAG, VISIBILITY_TIMEOUT, SqsSource
from tests.support.daemons import call, refused_mqtt, settings_for
from tests.support.eventually import EVENTUALLY, eventually
from tests.support.executions import arn
from tests.support.sources import running_tasks, started


def completion(txn_id: str, status: str = "SUCCEEDED", **fields: Any) -> str:
    return json.dumps(
        {"txnId": txn_id, "executionArn": f"arn:{txn_id}", "status": status, **fields}
    )


def queue_name(stack: LocalStack) -> str:
    return f"{stack.outputs['CompletionQueuePrefix']}unit-{secrets.token_hex(4)}"


async def test_completions_resolve_duplicates_are_no_ops_poison_goes_to_the_dlq(
    stack: LocalStack,
) -> None:
    registry = Registry(max_held=10)
    first, second = new_txn_id(), new_txn_id()
    for txn_id in (first, second):
        registry.track(Transaction(txn_id, "hello", f"arn:{txn_id}"))
    poison = f"not a completion {secrets.token_hex(4)}"
    async with stack.aws().client("sqs") as sqs:
        source = SqsSource(
            sqs, registry, queue_name(stack), stack.outputs["StatusDeadLetterQueueArn"],
            wait_seconds=1,
        )  # fmt: skip
        async with source:
            await eventually(lambda: source.queue_url is not None)
            url = source.queue_url
            assert url is not None
            attributes = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))[
                "Attributes"
            ]
            for body in (
                poison,
                completion(first, output={"n": 1}),
                completion(first, "FAILED", error="E"),  # a later duplicate
                completion(second, "TIMED_OUT"),
                completion(new_txn_id()),  # not held here
            ):
                await sqs.send_message(QueueUrl=url, MessageBody=body)
            await eventually(lambda: source.deleted == 5)
            await eventually(lambda: source.error is None)
        left = await sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        dead = await sqs.receive_message(
            QueueUrl=stack.outputs["StatusDeadLetterQueueUrl"], MaxNumberOfMessages=10
        )
    assert attributes["SqsManagedSseEnabled"] == "true"
    assert (
        json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"]
        == (stack.outputs["StatusDeadLetterQueueArn"])
    )
    first_txn, second_txn = registry.get(first), registry.get(second)
    assert first_txn is not None and first_txn.completion is not None
    assert first_txn.completion.status is Status.SUCCEEDED
    assert first_txn.completion.via == "sqs" and first_txn.completion.output == {"n": 1}
    assert second_txn is not None and second_txn.completion is not None
    assert second_txn.completion.status is Status.TIMED_OUT
    assert source.resolved == 2 and source.dead_lettered == 1
    assert set(left["Attributes"].values()) == {"0"}  # everything handled was deleted
    assert poison in [m["Body"] for m in dead.get("Messages", [])]


async def test_the_queue_is_tagged_as_seen_and_its_dead_letters_counted(
    stack: LocalStack,
) -> None:
    depths: list[int] = []
    async with stack.aws().client("sqs") as sqs:
        dead_letters = (await sqs.create_queue(QueueName=f"unit-dlq-{secrets.token_hex(4)}"))[
            "QueueUrl"
        ]
        arn = (await sqs.get_queue_attributes(QueueUrl=dead_letters, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
        for n in range(3):
            await sqs.send_message(QueueUrl=dead_letters, MessageBody=f"dead {n}")
        source = SqsSource(
            sqs, Registry(max_held=1), queue_name(stack), arn, wait_seconds=1,
            on_dead_letters=depths.append, upkeep_interval=0.2,
        )  # fmt: skip
        before = datetime.now(UTC).replace(microsecond=0)
        async with source:
            await eventually(lambda: len(depths) >= 2)
            assert source.queue_url is not None
            tags = (await sqs.list_queue_tags(QueueUrl=source.queue_url))["Tags"]
    assert depths[-1] == 3
    assert before <= datetime.fromisoformat(tags[LAST_SEEN_TAG]) <= datetime.now(UTC)


async def test_an_existing_queue_is_reused(stack: LocalStack) -> None:
    name = queue_name(stack)
    registry = Registry(max_held=10)
    txn_id = new_txn_id()
    registry.track(Transaction(txn_id, "hello", f"arn:{txn_id}"))
    dlq = stack.outputs["StatusDeadLetterQueueArn"]
    async with stack.aws().client("sqs") as sqs:
        # Short polls: a long one cut off by the stop would still take the message below on
        # the server, which would hide it for the visibility timeout.
        async with SqsSource(sqs, registry, name, dlq, wait_seconds=0) as source:
            await eventually(lambda: source.queue_url is not None)
        # A completion sent while the instance was away is read after its restart. (Should a
        # receive still in flight when it stopped take it all the same, it is back after the
        # visibility timeout.)
        await sqs.send_message(QueueUrl=source.queue_url, MessageBody=completion(txn_id))
        async with SqsSource(sqs, registry, name, dlq, wait_seconds=1) as again:
            await eventually(lambda: again.resolved == 1, EVENTUALLY + VISIBILITY_TIMEOUT)
    assert again.queue_url == source.queue_url


async def test_an_unreachable_sqs_is_reported_and_retried() -> None:
    no_retries = AioConfig(retries={"max_attempts": 1}, connect_timeout=1)
    client = get_session().create_client(
        "sqs",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",  # nothing listens there
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=no_retries,
    )
    registry = Registry(max_held=10)
    dlq = "arn:aws:sqs:us-east-1:123456789012:dlq"
    async with client as sqs:
        source = SqsSource(sqs, registry, "q", dlq, wait_seconds=1, retry_min=0.05, retry_max=0.1)
        async with source:  # starting does not wait for SQS
            await eventually(lambda: source.error is not None)
            first = source.error
            await eventually(lambda: source.received == 0 and source.error == first)
            assert not source.healthy and source.queue_url is None


async def test_the_daemon_answers_from_its_queue_while_mqtt_is_refused(
    stack: LocalStack, http: aiohttp.ClientSession
) -> None:
    # MQTT never connects; the queue (or a sweep) answers instead.
    async with Daemon(refused_mqtt(settings_for(stack))) as daemon:
        status, _, ready = await call(http, "GET", f"{daemon.url}/readyz")
        assert status == 200 and ready["state"] == "degraded"
        await eventually(lambda: daemon.app[SQS].queue_url is not None)
        status, _, body = await call(
            http,
            "POST",
            f"{daemon.url}/silent",
            json={"waitSeconds": 0, "fail": True},
            headers={"Prefer": "wait=60"},
        )
        assert status == 502, body
        assert body["status"] == "FAILED" and body["error"] == "Lambda.Unknown"
        assert body["completedVia"] in ("sqs", "poll")


async def test_the_daemon_answers_over_mqtt_while_its_queue_fails(
    stack: LocalStack, http: aiohttp.ClientSession
) -> None:
    # A redrive target that does not exist: every attempt to set up the queue fails.
    base = settings_for(stack)
    missing_dlq = "arn:aws:sqs:us-east-1:123456789012:notifier-test-no-such-dlq"
    failing = dataclasses.replace(
        base, sqs=dataclasses.replace(base.sqs, dead_letter_queue_arn=missing_dlq)
    )
    async with Daemon(failing) as daemon:
        await eventually(lambda: daemon.app[SQS].error is not None)
        status, _, ready = await call(http, "GET", f"{daemon.url}/readyz")
        assert status == 200 and ready["state"] == "degraded" and ready["sqsError"]
        status, _, body = await call(
            http, "POST", f"{daemon.url}/hello", json={"n": 7}, headers={"Prefer": "wait=60"}
        )
        assert status == 200, body
        assert body["completedVia"] == "mqtt" and body["output"]["n"] == 7
        assert daemon.app[SQS].queue_url is None


class FlakySqs:
    """An SQS client whose first ReceiveMessage raises; then it has one completion."""

    def __init__(self, body: str) -> None:
        self.receives = 0
        self.deleted: list[str] = []
        self._messages = [{"Body": body, "ReceiptHandle": "r1"}]

    async def get_queue_url(self, **kwargs: Any) -> dict[str, str]:
        return {"QueueUrl": "http://sqs/dlq"}

    async def create_queue(self, **kwargs: Any) -> dict[str, str]:
        return {"QueueUrl": "http://sqs/q"}

    async def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        self.receives += 1
        if self.receives == 1:
            raise RuntimeError("the inner call broke")
        await asyncio.sleep(0.01)  # a long poll
        messages, self._messages = self._messages, []
        return {"Messages": messages}

    async def delete_message_batch(self, **kwargs: Any) -> None:
        self.deleted += [entry["ReceiptHandle"] for entry in kwargs["Entries"]]


async def test_the_queue_source_recovers_when_its_inner_call_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry(max_held=10)
    txn = started(registry, new_txn_id())
    body = {"txnId": txn.txn_id, "executionArn": arn(txn.txn_id), "status": "SUCCEEDED"}
    sqs = FlakySqs(json.dumps(body))
    dlq = "arn:aws:sqs:us-east-1:123456789012:dlq"
    source = SqsSource(sqs, registry, "q", dlq, retry_min=0.01, retry_max=0.02)
    async with registry.hold(txn.txn_id) as waiter, source:
        completion = await asyncio.wait_for(waiter, EVENTUALLY)
        # The first receive raised (logged), and a later one brought the completion: the
        # error itself lasts only until that retry, too briefly to watch for.
        assert sqs.receives >= 2
        assert any("the inner call broke" in record.getMessage() for record in caplog.records)
        await eventually(lambda: source.error is None and sqs.deleted == ["r1"])
        assert "sqs-source" in running_tasks()
    assert completion is not None and completion.via == "sqs"
    assert source.resolved == 1 and source.deleted == 1
