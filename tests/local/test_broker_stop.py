"""Stopping the local broker disconnects every client: none stays connected to the stopped
broker (which would acknowledge its CONNECT and publishes and deliver them to no one), so
each comes back to the broker started after, as clients of a restarted IoT Core do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from awscrt import mqtt

from notifier.local.broker import LocalBroker
from notifier.local.iot_core import BrokerPublisher
from notifier.local.settings import PUBLISHER_CLIENT_ID
from tests.sources.test_mqtt import PUBLISHER_PASSWORD, access_control, new_token
from tests.support.busy_loop import busy_event_loop
from tests.support.eventually import eventually
from tests.support.mqtt import connected, connection


@pytest.fixture
async def broker() -> AsyncIterator[LocalBroker]:
    async with LocalBroker("127.0.0.1", 0, access_control()) as running:
        yield running


def mqtt_string(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def publisher_connect_packet() -> bytes:
    """An MQTT 3.1.1 CONNECT of the IoT data plane's publisher (clean session, no keep-alive)."""
    body = (
        mqtt_string("MQTT") + bytes([4, 0b1100_0010]) + (0).to_bytes(2, "big")
        + mqtt_string(PUBLISHER_CLIENT_ID) + mqtt_string(PUBLISHER_CLIENT_ID)
        + mqtt_string(PUBLISHER_PASSWORD)
    )  # fmt: skip
    assert len(body) < 128  # a one-byte remaining length
    return bytes([0x10, len(body)]) + body


async def test_a_connection_accepted_before_the_stop_is_not_served_after_it(
    broker: LocalBroker,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
    try:
        amqtt = broker._broker
        assert amqtt is not None
        await eventually(lambda: amqtt._servers["default"].conn_count == 1)  # it has it
        await broker.stop()
        writer.write(publisher_connect_packet())
        try:
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(4), 60)
        except ConnectionError:
            answer = b""
        assert answer == b"", f"the stopped broker answered the CONNECT: {answer!r}"
    finally:
        writer.close()


async def test_the_publisher_comes_back_after_a_stop_on_a_busy_event_loop(
    broker: LocalBroker,
) -> None:
    """The stop takes seconds on a busy loop, longer than the publisher waits to reconnect
    once its connection is closed: it must not find the stopping broker still listening."""
    loop = asyncio.get_running_loop()
    publisher = BrokerPublisher("127.0.0.1", broker.port, PUBLISHER_PASSWORD)
    later = [connection("127.0.0.1", broker.port, new_token(f"stop-{n}")) for n in range(4)]
    received: asyncio.Queue[bytes] = asyncio.Queue()
    try:
        await asyncio.to_thread(publisher.publish, "notifier/none/txn", b"{}")  # connects first
        for client in later:  # and so is disconnected before them
            await asyncio.wrap_future(client.connect())
        async with busy_event_loop():
            await broker.stop()
        await broker.start()
        await eventually(lambda: connected(broker, PUBLISHER_CLIENT_ID))
        token = new_token("stop-receiver")
        receiver = connection("127.0.0.1", broker.port, token)
        await asyncio.wrap_future(receiver.connect())
        later.append(receiver)
        subscribed, _ = receiver.subscribe(
            token.topic_filters[0],
            mqtt.QoS.AT_LEAST_ONCE,
            lambda topic, payload, **kw: loop.call_soon_threadsafe(received.put_nowait, payload),
        )
        await asyncio.wrap_future(subscribed)
        await asyncio.to_thread(publisher.publish, "notifier/stop-receiver/txn", b"after")
        assert await asyncio.wait_for(received.get(), 60) == b"after"
    finally:
        for client in later:
            await asyncio.wrap_future(client.disconnect())
        await asyncio.to_thread(publisher.close)
