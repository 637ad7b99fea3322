"""The MQTT completion source against a real broker (amqtt, as in the local stack), which
authenticates with the iotauth authorizer handler run in-process."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from awscrt import io, mqtt
from awscrt.exceptions import AwsCrtError

from iotauth import issuer, tokens
from iotauth.authorizer import AuthorizerSettings, authorize
from iotauth.keys import KeyRing
from notifier.aws.iot_tokens import IotToken, TokenError
from notifier.bench.link import CuttableLink
from notifier.config import MqttSettings
from notifier.dashboard.status import StatusFeed
from notifier.local.broker import LocalBroker
from notifier.local.broker_auth import AccessControl
from notifier.local.settings import PUBLISHER_CLIENT_ID
from notifier.requests.ids import new_txn_id
from notifier.requests.waiters import Registry, Status, Transaction
from notifier.sources import InvalidNotificationError, parse_notification
from notifier.sources.mqtt import MqttSource, MqttSubscription
from tests.support.eventually import EVENTUALLY, eventually
from tests.support.executions import arn
from tests.support.mqtt import forget_subscriptions

KEY = b"k" * 64
ARN_PREFIX = "arn:aws:iot:us-east-1:123456789012:"
AUTHORIZER = "unit-authorizer"
PUBLISHER_PASSWORD = "publisher-password"


async def in_process_authorizer(name: str, event: dict[str, Any]) -> dict[str, Any]:
    assert name == AUTHORIZER
    settings = AuthorizerSettings("notifier", ARN_PREFIX)
    answer, _ = authorize(event, lambda kid: KeyRing(KEY).by_id, settings)
    return answer


def access_control() -> AccessControl:
    access = AccessControl(ARN_PREFIX, PUBLISHER_PASSWORD)
    access.authorize = in_process_authorizer
    return access


def new_token(subtopic: str = "unit", key: bytes = KEY) -> IotToken:
    settings = issuer.IssuerSettings("notifier", AUTHORIZER, "127.0.0.1", 1883)
    return IotToken.from_answer(issuer.issue(tokens.DAEMON, subtopic, key, settings, time.time()))


async def issue_token() -> IotToken:
    return new_token()


class Publisher:
    def __init__(self, port: int) -> None:
        self.connection = mqtt.Connection(
            client=mqtt.Client(io.ClientBootstrap.get_or_create_static_default()),
            host_name="127.0.0.1",
            port=port,
            client_id=PUBLISHER_CLIENT_ID,
            username=PUBLISHER_CLIENT_ID,
            password=PUBLISHER_PASSWORD,
            disable_metrics=True,
        )

    async def __aenter__(self) -> Publisher:
        await asyncio.wrap_future(self.connection.connect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.wrap_future(self.connection.disconnect())

    async def publish(self, topic: str, payload: bytes | dict[str, object]) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        future, _ = self.connection.publish(topic, body, mqtt.QoS.AT_LEAST_ONCE)
        await asyncio.wrap_future(future)


@pytest.fixture
async def broker() -> AsyncIterator[LocalBroker]:
    async with LocalBroker("127.0.0.1", 0, access_control()) as running:
        yield running


def source_for(
    port: int,
    registry: Registry,
    tokens: Callable[[], Any] = issue_token,
    keep_alive_secs: int = 30,
    **kwargs: Any,
) -> MqttSource:
    settings = MqttSettings(
        transport="tcp",
        endpoint="127.0.0.1",
        port=port,
        keep_alive_secs=keep_alive_secs,
        reconnect_max_secs=2,
    )
    return MqttSource(
        settings,
        instance_id="unit",
        registry=registry,
        endpoint="127.0.0.1",
        tokens=tokens,
        **kwargs,
    )


def message(txn_id: str, status: str = "SUCCEEDED") -> dict[str, object]:
    return {"txnId": txn_id, "executionArn": arn(txn_id), "status": status, "output": 1}


async def test_bad_messages_are_ignored_and_the_loop_goes_on(broker: LocalBroker) -> None:
    registry = Registry(max_held=10)
    txn_id = new_txn_id()
    registry.track(Transaction(txn_id, "hello", arn(txn_id)))
    async with source_for(broker.port, registry) as source, Publisher(broker.port) as publisher:
        for topic, payload in [
            (f"notifier/unit/{txn_id}", b"\xff not json"),
            (f"notifier/unit/{txn_id}", b"[1, 2]"),
            (f"notifier/unit/{txn_id}", message(txn_id, "RUNNING")),
            (f"notifier/unit/{txn_id}", message(new_txn_id())),  # txnId differs from topic
            (f"notifier/unit/{txn_id}/extra", message(txn_id)),  # not subscribed to
            (f"notifier/unit/{(other := new_txn_id())}", message(other)),  # unknown
        ]:
            await publisher.publish(topic, payload)
        await eventually(lambda: source.ignored == 5)
        assert registry.get(txn_id).completion is None  # type: ignore[union-attr]  # tracked above

        await publisher.publish(f"notifier/unit/{txn_id}", message(txn_id))
        await publisher.publish(f"notifier/unit/{txn_id}", message(txn_id, "FAILED"))
        await eventually(lambda: source.received == 7)
        completion = registry.get(txn_id).completion  # type: ignore[union-attr]  # tracked above
        assert completion is not None
        assert completion.status is Status.SUCCEEDED and completion.via == "mqtt"
        assert (source.ignored, source.duplicated) == (6, 1)


async def test_other_instances_topics_are_not_received(broker: LocalBroker) -> None:
    registry = Registry(max_held=10)
    async with source_for(broker.port, registry) as source, Publisher(broker.port) as publisher:
        await publisher.publish(f"notifier/someone-else/{new_txn_id()}", message(new_txn_id()))
        txn_id = new_txn_id()
        registry.track(Transaction(txn_id, "hello", arn(txn_id)))
        await publisher.publish(f"notifier/unit/{txn_id}", message(txn_id))
        await eventually(lambda: source.received == 1)
        assert source.ignored == 0


async def test_resubscribes_after_the_broker_restarts() -> None:
    access = access_control()
    broker = LocalBroker("127.0.0.1", 0, access)
    await broker.start()
    port = broker.port
    registry = Registry(max_held=10)
    try:
        async with source_for(port, registry) as source:
            await broker.stop()
            await eventually(lambda: not source.connected)
            broker = LocalBroker("127.0.0.1", port, access)
            await broker.start()  # a new broker: no session, no subscriptions
            await eventually(lambda: source.connected)
            txn_id = new_txn_id()
            txn = registry.track(Transaction(txn_id, "hello", arn(txn_id)))
            async with Publisher(port) as publisher, asyncio.timeout(EVENTUALLY):
                while txn.completion is None:  # noqa: ASYNC110 (publishes until one is received)
                    # Until the resubscription lands, publishes have no subscriber.
                    await publisher.publish(f"notifier/unit/{txn_id}", message(txn_id))
                    await asyncio.sleep(0.1)
    finally:
        await broker.stop()


def test_parse_notification_failure_fields() -> None:
    txn_id = new_txn_id()
    payload = {"txnId": txn_id, "status": "FAILED", "error": "E", "cause": "C"}
    completion = parse_notification(json.dumps(payload).encode(), via="mqtt")
    assert (completion.status, completion.error, completion.cause) == (Status.FAILED, "E", "C")
    with pytest.raises(InvalidNotificationError):
        parse_notification(b'{"txnId": 1, "status": "FAILED"}', via="mqtt")


async def test_refresh_switches_connections_without_missing_a_completion(
    broker: LocalBroker,
) -> None:
    registry = Registry(max_held=1000)
    async with source_for(broker.port, registry) as source, Publisher(broker.port) as publisher:
        first_client = source.client_id
        txn_ids = [new_txn_id() for _ in range(60)]
        for txn_id in txn_ids:
            registry.track(Transaction(txn_id, "hello", arn(txn_id)))

        async def publish_all() -> None:
            for txn_id in txn_ids:
                await publisher.publish(f"notifier/unit/{txn_id}", message(txn_id))

        await asyncio.gather(publish_all(), source.refresh())
        await eventually(lambda: all(registry.get(t).completion for t in txn_ids))  # type: ignore[union-attr]  # tracked above
        assert source.refreshes == 1 and source.client_id != first_client
        assert source.connected and source.auth_error is None


async def test_tokens_are_refreshed_before_they_expire(broker: LocalBroker) -> None:
    registry = Registry(max_held=10)
    # A margin of nearly the whole lifetime: refresh about a second after each connect.
    margin = issuer.DEFAULT_LIFETIME_SECONDS - 1
    async with source_for(broker.port, registry, refresh_margin=margin) as source:
        await eventually(lambda: source.refreshes >= 2)
        assert source.connected


def subscription_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The failures subscriptions logged (one line per distinct failure in a row)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "notifier.sources.mqtt.subscription" and r.levelno == logging.ERROR
    ]


async def test_a_failing_token_is_reported_and_retried(
    broker: LocalBroker, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(max_held=10)
    answers: list[Callable[[], IotToken]] = [
        lambda: (_ for _ in ()).throw(TokenError("issuer says no")),
        lambda: new_token(key=b"forged" * 8),
    ]

    async def flaky() -> IotToken:
        return answers.pop(0)() if answers else new_token()

    async with source_for(broker.port, registry, tokens=flaky) as source:
        assert not source.connected
        assert source.auth_error is not None and "issuer says no" in source.auth_error
        # The refusal is reported until the next try, which may come before a look at it.
        await eventually(lambda: source.connected)
        assert source.auth_failures == 2 and source.auth_error is None and source.refreshes == 0
        failures = subscription_errors(caplog)
        assert len(failures) == 2 and "refused the token" in failures[1]


async def test_a_slow_authorizer_does_not_fail_the_connect() -> None:
    """IoT Core answers a CONNECT only once the authorizer's Lambda has: up to its timeout."""
    access = access_control()

    async def slow_authorizer(name: str, event: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(4)  # longer than awscrt's default wait for CONNACK (3 s)
        return await in_process_authorizer(name, event)

    access.authorize = slow_authorizer
    async with LocalBroker("127.0.0.1", 0, access) as broker:
        async with source_for(broker.port, Registry(max_held=10)) as source:
            assert source.connected and source.auth_error is None


async def test_anonymous_and_forged_clients_are_refused(broker: LocalBroker) -> None:
    for token in (None, new_token(key=b"forged" * 8)):
        connection = mqtt.Connection(
            client=mqtt.Client(io.ClientBootstrap.get_or_create_static_default()),
            host_name="127.0.0.1",
            port=broker.port,
            client_id=token.client_id if token else "anonymous",
            username=token.username if token else None,
            password=token.password if token else None,
            disable_metrics=True,
        )
        with pytest.raises(AwsCrtError):  # the broker closes the connection
            await asyncio.wrap_future(connection.connect())


async def delivered(publisher: Publisher, registry: Registry) -> None:
    """A completion published now reaches ``registry`` over MQTT."""
    txn_id = new_txn_id()
    txn = registry.track(Transaction(txn_id, "hello", arn(txn_id)))
    await publisher.publish(f"notifier/unit/{txn_id}", message(txn_id))
    await eventually(lambda: txn.completion is not None)


async def test_after_every_reconnect_it_subscribes_again_whatever_the_session(
    broker: LocalBroker,
) -> None:
    registry = Registry(max_held=10)
    async with CuttableLink("127.0.0.1", broker.port) as link:
        source = source_for(link.port, registry, keep_alive_secs=5)
        async with source, Publisher(broker.port) as publisher:
            await delivered(publisher, registry)
            link.cut()
            await forget_subscriptions(broker, source.client_id)
            await eventually(lambda: not source.connected)  # its next ping meets the cut
            link.restore()
            await eventually(lambda: source.connected)
            assert source.reconnects == 1
            await delivered(publisher, registry)


async def test_renew_replaces_a_connection_that_is_not_trusted(broker: LocalBroker) -> None:
    registry = Registry(max_held=10)
    async with source_for(broker.port, registry) as source, Publisher(broker.port) as publisher:
        first_client = source.client_id
        await forget_subscriptions(broker, first_client)  # connected, and deaf
        source.renew()
        assert not source.connected  # the sweeps take over at once
        await eventually(lambda: source.connected)
        assert source.client_id != first_client and source.renewals == 1
        await delivered(publisher, registry)


def new_dashboard_token() -> IotToken:
    settings = issuer.IssuerSettings("notifier", AUTHORIZER, "127.0.0.1", 1883)
    answer = issuer.issue(tokens.DASHBOARD, None, KEY, settings, time.time())
    return IotToken.from_answer(answer)


@pytest.mark.parametrize("kind", ["completions", "status feed"])
async def test_the_keeper_recovers_when_its_inner_call_raises(
    broker: LocalBroker, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(max_held=10)
    calls = 0

    async def breaks_once() -> IotToken:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first refresh
            raise RuntimeError("the token source broke")
        return new_token() if kind == "completions" else new_dashboard_token()

    margin = issuer.DEFAULT_LIFETIME_SECONDS - 1  # refresh about a second after connecting
    source: MqttSubscription
    if kind == "completions":
        source = source_for(broker.port, registry, tokens=breaks_once, refresh_margin=margin)
    else:
        statuses: list[dict[str, Any]] = []
        source = StatusFeed(
            MqttSettings(transport="tcp", endpoint="127.0.0.1", port=broker.port),
            instance_id="unit",
            handlers=[statuses.append],
            endpoint="127.0.0.1",
            tokens=breaks_once,
            refresh_margin=margin,
        )
    async with source, Publisher(broker.port) as publisher:
        # The failure is reported until the next try, which may come before a look at it.
        await eventually(lambda: source.refreshes >= 1 and source.auth_error is None)
        assert source.auth_failures == 1
        [failure] = subscription_errors(caplog)
        assert failure.endswith("failed, retrying: the token source broke")
        assert f"{source.label} keeper" in {t.get_name() for t in asyncio.all_tasks()}
        if kind == "completions":
            await delivered(publisher, registry)
        else:
            await publisher.publish("notifier/status/Hello/x", {"status": "RUNNING"})
            await eventually(lambda: statuses == [{"status": "RUNNING"}])
