"""The MQTT completion source against a real broker (amqtt, as in the local stack)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from awscrt import io, mqtt

from notifier.config import MqttSettings
from notifier.ids import new_txn_id
from notifier.local.broker import LocalBroker
from notifier.sources import InvalidNotificationError, parse_notification
from notifier.sources.mqtt import MqttSource
from notifier.waiters import Registry, Status, Transaction

EVENTUALLY = 30.0


async def eventually(predicate: object) -> None:
    assert callable(predicate)
    async with asyncio.timeout(EVENTUALLY):
        while not predicate():  # noqa: ASYNC110 (watches state that has no event)
            await asyncio.sleep(0.02)


class Publisher:
    def __init__(self, port: int) -> None:
        self.connection = mqtt.Connection(
            client=mqtt.Client(io.ClientBootstrap.get_or_create_static_default()),
            host_name="127.0.0.1",
            port=port,
            client_id=f"test-publisher-{new_txn_id()}",
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
    async with LocalBroker("127.0.0.1", 0) as running:
        yield running


def source_for(port: int, registry: Registry) -> MqttSource:
    settings = MqttSettings(transport="tcp", endpoint="127.0.0.1", port=port, reconnect_max_secs=2)
    return MqttSource(settings, instance_id="unit", registry=registry, endpoint="127.0.0.1")


def message(txn_id: str, status: str = "SUCCEEDED") -> dict[str, object]:
    return {"txnId": txn_id, "executionArn": f"arn:{txn_id}", "status": status, "output": 1}


async def test_bad_messages_are_ignored_and_the_loop_goes_on(broker: LocalBroker) -> None:
    registry = Registry(max_held=10)
    txn_id = new_txn_id()
    registry.track(Transaction(txn_id, "hello", "arn"))
    async with source_for(broker.port, registry) as source, Publisher(broker.port) as publisher:
        for topic, payload in [
            (f"notifier/unit/{txn_id}", b"\xff not json"),
            (f"notifier/unit/{txn_id}", b"[1, 2]"),
            (f"notifier/unit/{txn_id}", message(txn_id, "RUNNING")),
            (f"notifier/unit/{txn_id}", message(new_txn_id())),  # txnId differs from topic
            (f"notifier/unit/{txn_id}/extra", message(txn_id)),
            (f"notifier/unit/{(other := new_txn_id())}", message(other)),  # unknown
        ]:
            await publisher.publish(topic, payload)
        await eventually(lambda: source.ignored == 6)
        assert registry.get(txn_id).completion is None  # type: ignore[union-attr]

        await publisher.publish(f"notifier/unit/{txn_id}", message(txn_id))
        await publisher.publish(f"notifier/unit/{txn_id}", message(txn_id, "FAILED"))
        await eventually(lambda: source.received == 8)
        completion = registry.get(txn_id).completion  # type: ignore[union-attr]
        assert completion is not None
        assert completion.status is Status.SUCCEEDED and completion.via == "mqtt"
        assert source.ignored == 7  # the duplicate


async def test_other_instances_topics_are_not_received(broker: LocalBroker) -> None:
    registry = Registry(max_held=10)
    async with source_for(broker.port, registry) as source, Publisher(broker.port) as publisher:
        await publisher.publish(f"notifier/someone-else/{new_txn_id()}", message(new_txn_id()))
        txn_id = new_txn_id()
        registry.track(Transaction(txn_id, "hello", "arn"))
        await publisher.publish(f"notifier/unit/{txn_id}", message(txn_id))
        await eventually(lambda: source.received == 1)
        assert source.ignored == 0


async def test_resubscribes_after_the_broker_restarts() -> None:
    broker = LocalBroker("127.0.0.1", 0)
    await broker.start()
    port = broker.port
    registry = Registry(max_held=10)
    try:
        async with source_for(port, registry) as source:
            await broker.stop()
            await eventually(lambda: not source.connected)
            broker = LocalBroker("127.0.0.1", port)
            await broker.start()  # a new broker: no session, no subscriptions
            await eventually(lambda: source.connected)
            txn_id = new_txn_id()
            registry.track(Transaction(txn_id, "hello", "arn"))
            async with Publisher(port) as publisher:
                while registry.get(txn_id).completion is None:  # type: ignore[union-attr]  # noqa: ASYNC110
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
