"""An awscrt MQTT subscriber for tests: collects messages into an asyncio queue."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from awscrt import io, mqtt

from notifier.lifecycle import Service


class MqttRecorder(Service):
    def __init__(self, host: str, port: int, topic_filter: str) -> None:
        self.topic_filter = topic_filter
        self.messages: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._connection = mqtt.Connection(
            client=mqtt.Client(io.ClientBootstrap.get_or_create_static_default()),
            host_name=host,
            port=port,
            client_id=f"test-{uuid.uuid4().hex[:12]}",
            clean_session=True,
            keep_alive_secs=30,
            disable_metrics=True,
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def on_message(topic: str, payload: bytes, **kwargs: Any) -> None:
            loop.call_soon_threadsafe(self.messages.put_nowait, (topic, json.loads(payload)))

        await asyncio.wrap_future(self._connection.connect())
        subscribed, _ = self._connection.subscribe(
            self.topic_filter, mqtt.QoS.AT_LEAST_ONCE, callback=on_message
        )
        await asyncio.wrap_future(subscribed)

    async def next(self, timeout: float = 60.0) -> tuple[str, Any]:
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def on_topic(self, topic: str, timeout: float = 60.0) -> Any:
        """The next message published to exactly ``topic``; others are dropped."""
        async with asyncio.timeout(timeout):
            while True:
                received, message = await self.messages.get()
                if received == topic:
                    return message

    async def stop(self) -> None:
        await asyncio.wrap_future(self._connection.disconnect())
