"""The local broker keeps a persistent session delivering when a client whose link was cut
reconnects before the broker noticed: the take-over that used to leave it deaf."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from awscrt import io, mqtt

from notifier.bench.link import CuttableLink
from notifier.local.broker import LocalBroker
from notifier.requests.ids import new_txn_id
from tests.sources.test_mqtt import Publisher, access_control, new_token
from tests.support.eventually import eventually


@pytest.fixture
async def broker() -> AsyncIterator[LocalBroker]:
    async with LocalBroker("127.0.0.1", 0, access_control()) as running:
        yield running


class PersistentClient:
    """A client with a persistent session, as the daemon's, through ``link``."""

    def __init__(self, link: CuttableLink) -> None:
        loop = asyncio.get_running_loop()
        self.token = new_token()
        self.received: asyncio.Queue[str] = asyncio.Queue()
        self.resumed: list[bool] = []

        def on_message(topic: str, payload: bytes, **kwargs: Any) -> None:
            loop.call_soon_threadsafe(self.received.put_nowait, json.loads(payload)["txnId"])

        def on_resumed(connection: Any, return_code: Any, session_present: bool, **kw: Any) -> None:
            loop.call_soon_threadsafe(self.resumed.append, session_present)

        self.on_message = on_message
        self.connection = mqtt.Connection(
            client=mqtt.Client(io.ClientBootstrap.get_or_create_static_default()),
            host_name="127.0.0.1",
            port=link.port,
            client_id=self.token.client_id,
            username=self.token.username,
            password=self.token.password,
            clean_session=False,
            keep_alive_secs=30,
            reconnect_min_timeout_secs=1,
            reconnect_max_timeout_secs=1,
            on_connection_resumed=on_resumed,
            disable_metrics=True,
        )

    async def start(self) -> None:
        await asyncio.wrap_future(self.connection.connect())
        subscribed, _ = self.connection.subscribe(
            self.token.topic_filters[0], mqtt.QoS.AT_LEAST_ONCE, self.on_message
        )
        await asyncio.wrap_future(subscribed)

    def poke(self) -> None:
        """Send a packet (a ping would do, were it not 30 s away): into a cut, it is reset."""
        self.connection.publish("notifier/unit/poke", b"{}", mqtt.QoS.AT_MOST_ONCE)

    async def stop(self) -> None:
        await asyncio.wrap_future(self.connection.disconnect())


async def delivered(publisher: Publisher, client: PersistentClient) -> None:
    txn_id = new_txn_id()
    await publisher.publish(f"notifier/unit/{txn_id}", {"txnId": txn_id})
    assert await asyncio.wait_for(client.received.get(), 10) == txn_id


async def test_a_session_taken_over_after_a_cut_still_delivers(broker: LocalBroker) -> None:
    async with CuttableLink("127.0.0.1", broker.port) as link, Publisher(broker.port) as publisher:
        client = PersistentClient(link)
        await client.start()
        try:
            await delivered(publisher, client)
            link.cut()
            client.poke()  # the client learns of the cut; the broker does not
            await eventually(lambda: link.resets >= 1)
            resets = link.resets
            await eventually(lambda: link.resets > resets)  # a reconnect met the cut too
            link.restore()
            await eventually(lambda: client.resumed)
            # The broker still had the old connection: it took it over, session present.
            assert client.resumed == [True]
            for _ in range(3):
                await delivered(publisher, client)
        finally:
            await client.stop()
