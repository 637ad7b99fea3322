"""AWS's quotas on the local stack, as a client meets them: IoT Core's per-connection limits
on the broker and its data plane, Step Functions' API throttling on the AWS endpoint.

The stacks here are their own, so that exhausting the account's Step Functions buckets
throttles no other test, and no other test's traffic is counted here."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from awscrt import mqtt
from awscrt.exceptions import AwsCrtError
from botocore.exceptions import ClientError
from botocore.retries.standard import RetryContext, ThrottledRetryableChecker

from notifier.daemon import Daemon
from notifier.local.daemon_config import local_settings
from notifier.local.quotas import QuotaSettings
from notifier.local.settings import LocalStackSettings
from notifier.local.stack import LocalStack
from tests.local.test_workflows import new_id
from tests.sources.test_transports import register_device
from tests.support.daemons import call
from tests.support.eventually import eventually
from tests.support.mqtt import connected, mtls_connection, tls_connection, token_for

START_BUCKET = "24/6"
"""The account's StartExecution bucket on this module's stack (AWS: 1,300, refilled 300 a
second): small, so that a burst of a few dozen starts exceeds it."""
DAEMON_START_RATE = 5
"""The daemon's share of it: 5 starts a second, in bursts of 20 (its pacer holds 4 s of its
rate), below the stack's 24 with room for the one start of another test."""
CONNECT_RATE = 0.05
"""One CONNECT per client id every 20 s (AWS: 1 a second), so that a second one made at
once is refused however slow the machine is."""
PUBLISHES = 400
PAYLOAD_LIMIT = 128_000


def stack_settings(quotas: QuotaSettings) -> LocalStackSettings:
    return LocalStackSettings(
        aws_port=0, mqtt_port=0, mqtt_tls_port=0, mqtt_wss_port=0, issuer_port=0, quotas=quotas
    )


@pytest.fixture(scope="module")
async def quota_stack() -> AsyncIterator[LocalStack]:
    quotas = QuotaSettings().with_values(
        [f"iot-connect-rate={CONNECT_RATE}", f"sfn-start-execution={START_BUCKET}"]
    )
    async with LocalStack(stack_settings(quotas)) as stack:
        yield stack


def client(stack: LocalStack, service: str) -> Any:
    """An aiobotocore client that makes each call once: a throttled call is not retried."""
    aws = stack.aws_settings
    return get_session().create_client(
        service,
        region_name=aws.region,
        endpoint_url=aws.endpoint_url,
        aws_access_key_id=aws.access_key_id,
        aws_secret_access_key=aws.secret_access_key,
        config=AioConfig(
            retries={"mode": "standard", "total_max_attempts": 1}, max_pool_connections=32
        ),
    )


class Subscriber:
    """A token client of its subtopic, noting when each message it was delivered arrived."""

    def __init__(self, stack: LocalStack, subtopic: str) -> None:
        self.stack = stack
        self.subtopic = subtopic
        self.arrivals: list[float] = []
        self.connection: Any = None

    async def connect(self) -> None:
        token = await token_for(self.stack, self.subtopic)
        self.filter = token.topic_filters[0]
        self.connection = tls_connection(self.stack, token)
        self.client_id = token.client_id
        await asyncio.wrap_future(self.connection.connect())

    async def disconnected_by_the_broker(self) -> None:
        await eventually(lambda: not connected(self.stack.broker, self.client_id))

    async def subscribe(self, topic_filter: str | None = None) -> None:
        loop = asyncio.get_running_loop()

        def on_message(topic: str, payload: bytes, **kwargs: Any) -> None:
            loop.call_soon_threadsafe(self.arrivals.append, loop.time())

        subscribed, _ = self.connection.subscribe(
            topic_filter or self.filter, mqtt.QoS.AT_LEAST_ONCE, callback=on_message
        )
        await asyncio.wrap_future(subscribed)

    async def close(self) -> None:
        if self.connection is not None:
            await asyncio.wrap_future(self.connection.disconnect())


async def publish_at_once(stack: LocalStack, subtopic: str, count: int) -> list[str]:
    async with client(stack, "iot-data") as iot:

        async def one(i: int) -> str:
            try:
                await iot.publish(topic=f"notifier/{subtopic}/m{i}", qos=1, payload=b'{"i": 1}')
            except ClientError as exc:
                return str(exc.response["Error"]["Code"])
            return "ok"

        return await asyncio.gather(*(one(i) for i in range(count)))


async def subscriber(stack: LocalStack) -> Subscriber:
    subscriber = Subscriber(stack, new_id("quota"))
    await subscriber.connect()
    await subscriber.subscribe()
    return subscriber


def counts(stack: LocalStack) -> Callable[[], dict[str, int]]:
    return stack.broker_quota_events.counts


async def test_one_connection_is_delivered_at_most_100_publishes_in_any_second(
    quota_stack: LocalStack,
) -> None:
    before = counts(quota_stack)()["iot_discarded"]
    quota_stack.connection_quotas.reset_peak()
    receiver = await subscriber(quota_stack)
    try:
        published = await publish_at_once(quota_stack, receiver.subtopic, PUBLISHES)
        assert published == ["ok"] * PUBLISHES  # the data plane accepted them all
        discarded = lambda: counts(quota_stack)()["iot_discarded"] - before  # noqa: E731
        await eventually(lambda: len(receiver.arrivals) + discarded() == PUBLISHES)
    finally:
        await receiver.close()
    assert discarded() > 0, "400 publishes at once all reached one connection"
    # What the broker sent it, counted over every one-second window as it sent each one.
    assert quota_stack.connection_quotas.peak_messages_per_second == 100
    assert quota_stack.connection_quotas.peak_client_id == receiver.client_id


async def test_an_http_publish_over_128_kb_gets_iot_cores_413(quota_stack: LocalStack) -> None:
    receiver = await subscriber(quota_stack)
    before = (await quota_stack.quota_events())["iot_payload_refused"]
    try:
        async with client(quota_stack, "iot-data") as iot:
            with pytest.raises(ClientError) as refused:
                await iot.publish(
                    topic=f"notifier/{receiver.subtopic}/big", qos=1, payload=b"x" * 130 * 1024
                )
            # The largest payload allowed still goes through.
            await iot.publish(
                topic=f"notifier/{receiver.subtopic}/largest", qos=1, payload=b"x" * PAYLOAD_LIMIT
            )
        await eventually(lambda: len(receiver.arrivals) == 1)
    finally:
        await receiver.close()
    error = refused.value.response
    assert error["Error"]["Code"] == "RequestEntityTooLargeException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert (await quota_stack.quota_events())["iot_payload_refused"] == before + 1


async def test_an_mqtt_publish_over_128_kb_fails_for_its_publisher(
    quota_stack: LocalStack,
) -> None:
    receiver = await subscriber(quota_stack)
    publisher = Subscriber(quota_stack, receiver.subtopic)
    await publisher.connect()
    before = counts(quota_stack)()["iot_payload_refused"]
    try:
        acknowledged, _ = publisher.connection.publish(
            f"notifier/{receiver.subtopic}/big", b"x" * 130 * 1024, mqtt.QoS.AT_LEAST_ONCE
        )
        await publisher.disconnected_by_the_broker()
        # Never acknowledged: failed with the connection, or still waiting for a PUBACK.
        assert not acknowledged.done() or acknowledged.exception() is not None
    finally:
        await publisher.close()
        await receiver.close()
    assert counts(quota_stack)()["iot_payload_refused"] == before + 1
    assert receiver.arrivals == []


async def test_a_subscribe_past_50_subscriptions_closes_the_connection(
    quota_stack: LocalStack,
) -> None:
    """As a device whose policy allows any filter under its topic: a token allows one."""
    name = new_id("device")
    prefix = "arn:aws:iot:us-east-1:123456789012:"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": f"{prefix}client/{name}"},
            {"Effect": "Allow", "Action": "iot:Subscribe",
             "Resource": f"{prefix}topicfilter/notifier/{name}/*"},
        ],
    }  # fmt: skip
    device = await register_device(quota_stack, name, policy)
    connection = mtls_connection(quota_stack, device, name)
    await asyncio.wrap_future(connection.connect())
    before = counts(quota_stack)()["iot_subscriptions_refused"]

    async def subscribe(topic_filter: str) -> None:
        subscribed, _ = connection.subscribe(topic_filter, mqtt.QoS.AT_LEAST_ONCE)
        await asyncio.wrap_future(subscribed)

    try:
        for i in range(50):
            await subscribe(f"notifier/{name}/s{i}")
        await subscribe(f"notifier/{name}/s0")  # one it holds is no new subscription
        assert connected(quota_stack.broker, name)
        connection.subscribe(f"notifier/{name}/s50", mqtt.QoS.AT_LEAST_ONCE)
        await eventually(lambda: not connected(quota_stack.broker, name))
    finally:
        await asyncio.wrap_future(connection.disconnect())
    assert counts(quota_stack)()["iot_subscriptions_refused"] == before + 1


async def test_a_second_connect_of_a_client_id_within_the_connect_rate_is_refused(
    quota_stack: LocalStack,
) -> None:
    subtopic = new_id("quota")
    token = await token_for(quota_stack, subtopic)
    before = counts(quota_stack)()["iot_connects_refused"]
    first = tls_connection(quota_stack, token)
    await asyncio.wrap_future(first.connect())
    await asyncio.wrap_future(first.disconnect())
    second = tls_connection(quota_stack, token)
    with pytest.raises(AwsCrtError):
        await asyncio.wait_for(asyncio.wrap_future(second.connect()), 60)
    assert counts(quota_stack)()["iot_connects_refused"] == before + 1


async def test_a_burst_of_describe_execution_is_throttled_as_step_functions_does(
    quota_stack: LocalStack,
) -> None:
    before = (await quota_stack.quota_events())["sfn_throttled"]
    async with client(quota_stack, "stepfunctions") as sfn:
        started = await sfn.start_execution(
            stateMachineArn=quota_stack.outputs["HelloStateMachineArn"],
            input=json.dumps({"subtopic": new_id("quota")}),
        )
        running = asyncio.Semaphore(32)
        refusals: list[dict[str, Any]] = []

        async def describe(_: int) -> str:
            async with running:
                try:
                    await sfn.describe_execution(executionArn=started["executionArn"])
                except ClientError as exc:
                    refusals.append(exc.response)
                    return str(exc.response["Error"]["Code"])
                return "ok"

        answers = await asyncio.gather(*(describe(i) for i in range(700)))
    throttled = answers.count("ThrottlingException")
    assert throttled > 0 and answers.count("ok") + throttled == 700
    # The account's bucket holds 300; what refilled meanwhile is all that may pass beyond it.
    assert answers.count("ok") >= 300
    assert (await quota_stack.quota_events())["sfn_throttled"] == before + throttled
    refusal = refusals[0]
    assert refusal["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert refusal["Error"]["Message"] == "Rate exceeded"
    # What the SDK's retry modes back off from (the daemon's clients retry adaptively).
    assert ThrottledRetryableChecker().is_retryable(
        RetryContext(attempt_number=1, parsed_response=refusal)
    )


async def test_with_quotas_off_nothing_is_discarded_or_throttled() -> None:
    async with LocalStack(stack_settings(QuotaSettings(enabled=False))) as stack:
        receiver = await subscriber(stack)
        try:
            assert await publish_at_once(stack, receiver.subtopic, PUBLISHES) == ["ok"] * PUBLISHES
            await eventually(lambda: len(receiver.arrivals) == PUBLISHES)
            async with client(stack, "iot-data") as iot:
                await iot.publish(
                    topic=f"notifier/{receiver.subtopic}/big", qos=1, payload=b"x" * 130 * 1024
                )
            await eventually(lambda: len(receiver.arrivals) == PUBLISHES + 1)
        finally:
            await receiver.close()
        async with client(stack, "stepfunctions") as sfn:
            listed = await asyncio.gather(
                *(sfn.list_executions(stateMachineArn=stack.outputs["HelloStateMachineArn"])
                  for _ in range(250))
            )  # fmt: skip
        assert len(listed) == 250  # ListExecutions' bucket holds 200
        assert not any((await stack.quota_events()).values())
        # Measured all the same: the busiest connection's second.
        assert stack.connection_quotas.peak_messages_per_second > 100


async def starts_through_a_daemon(stack: LocalStack, start_rate: float, count: int) -> int:
    """``count`` requests to /hello at once through a daemon whose share of the account's
    starts is ``start_rate``; all are answered 200. Returns how many StartExecution calls
    Step Functions throttled meanwhile."""
    before = (await stack.quota_events())["sfn_throttled"]
    env = {
        "NOTIFIER_HTTP_PORT": "0",
        "NOTIFIER_DAEMON_INSTANCE_ID": new_id("pacer"),
        "NOTIFIER_DAEMON_SFN_START_RATE": str(start_rate),
    }
    async with Daemon(local_settings(stack, env=env)) as daemon, aiohttp.ClientSession() as http:
        answers = await asyncio.gather(
            *(call(http, "POST", f"{daemon.url}/hello", json={"n": n},
                   headers={"Prefer": "wait=60"}) for n in range(count))
        )  # fmt: skip
    assert [status for status, _, _ in answers] == [200] * count
    return (await stack.quota_events())["sfn_throttled"] - before


async def test_the_daemon_paces_its_starts_within_its_share_and_is_not_throttled(
    quota_stack: LocalStack,
) -> None:
    """Last in this module: the burst without pacing empties the stack's start bucket."""
    # 30 at once: 20 at once and 10 more at 5 a second, within the bucket and its refill.
    assert await starts_through_a_daemon(quota_stack, DAEMON_START_RATE, 30) == 0
    # Twice the burst with a share larger than the account's: Step Functions throttles the
    # starts beyond its bucket, and they are answered all the same, after retries. (The MQTT
    # pool still spreads them at its connections' share, 50 a second each: over a second
    # or so, far more than the bucket and its refill.)
    assert await starts_through_a_daemon(quota_stack, 1000, 60) > 0
