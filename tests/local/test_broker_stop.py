"""Stopping the local broker disconnects every client: none stays connected to the stopped
broker (which would acknowledge its CONNECT and publishes and deliver them to no one), so
each comes back to the broker started after, as clients of a restarted IoT Core do."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from awscrt import io, mqtt

from notifier.local.broker import LocalBroker
from notifier.local.broker_auth import PUBLISHER_CLIENT_ID
from notifier.local.iot_core import BrokerPublisher
from tests.busy_loop import busy_event_loop
from tests.eventually import eventually
from tests.mqtt_support import connected
from tests.sources.test_mqtt import PUBLISHER_PASSWORD, access_control, new_token


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


class Subscriber:
    """An awscrt client of ``token``'s topics that reconnects by itself, as the daemon's."""

    def __init__(self, port: int, subtopic: str) -> None:
        loop = asyncio.get_running_loop()
        self.token = new_token(subtopic)
        self.topic = f"notifier/{subtopic}/txn"
        self.received: asyncio.Queue[Any] = asyncio.Queue()

        def on_message(topic: str, payload: bytes, **kwargs: Any) -> None:
            loop.call_soon_threadsafe(self.received.put_nowait, json.loads(payload))

        self.on_message = on_message
        self.connection = mqtt.Connection(
            client=mqtt.Client(io.ClientBootstrap.get_or_create_static_default()),
            host_name="127.0.0.1",
            port=port,
            client_id=self.token.client_id,
            username=self.token.username,
            password=self.token.password,
            clean_session=True,
            keep_alive_secs=30,
            reconnect_min_timeout_secs=1,
            reconnect_max_timeout_secs=1,
            on_connection_resumed=self._resubscribe,
            disable_metrics=True,
        )

    def _resubscribe(
        self, connection: Any, return_code: Any, session_present: bool, **kw: Any
    ) -> None:
        connection.subscribe(self.token.topic_filters[0], mqtt.QoS.AT_LEAST_ONCE, self.on_message)

    async def start(self) -> None:
        await asyncio.wrap_future(self.connection.connect())
        subscribed, _ = self.connection.subscribe(
            self.token.topic_filters[0], mqtt.QoS.AT_LEAST_ONCE, self.on_message
        )
        await asyncio.wrap_future(subscribed)

    async def stop(self) -> None:
        await asyncio.wrap_future(self.connection.disconnect())


async def test_the_publisher_comes_back_after_a_stop_on_a_busy_event_loop(
    broker: LocalBroker,
) -> None:
    """The stop takes seconds on a busy loop, longer than the publisher waits to reconnect
    once its connection is closed: it must not find the stopping broker still listening."""
    publisher = BrokerPublisher("127.0.0.1", broker.port, PUBLISHER_PASSWORD)
    subscribers = [Subscriber(broker.port, f"stop-{n}") for n in range(4)]
    try:
        await asyncio.to_thread(publisher.publish, "notifier/none/txn", b"{}")  # connects first
        for subscriber in subscribers:  # and so is disconnected before them
            await subscriber.start()
        async with busy_event_loop():
            await broker.stop()
        await broker.start()
        await eventually(lambda: connected(broker, PUBLISHER_CLIENT_ID))
        receiver = subscribers[-1]
        await eventually(lambda: connected(broker, receiver.token.client_id))
        # Resubscribed on its own: until then a publish is not delivered, so publish again.
        async with asyncio.timeout(60):
            while receiver.received.empty():
                await asyncio.to_thread(publisher.publish, receiver.topic, b'{"n": 1}')
                await asyncio.sleep(0.2)
        assert await receiver.received.get() == {"n": 1}
    finally:
        for subscriber in subscribers:
            await subscriber.stop()
        await asyncio.to_thread(publisher.close)
