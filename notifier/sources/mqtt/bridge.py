"""The bridge from awscrt's threads to the event loop.

awscrt runs every callback (a message, a lost link, a resumed one) on its own threads. Each
callback made here only hands its arguments over to the event loop with
``call_soon_threadsafe``; everything else happens in the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from awscrt import mqtt

MessageHandler = Callable[[str, bytes], None]
"""Called in the event loop with each message's topic and payload."""


@dataclass
class ConnectionActivity:
    last_message_at: float = float("-inf")
    """Event-loop time of the connection's last message."""


class ThreadBridge:
    """Callbacks for awscrt that run their handlers in ``loop``; once the loop is closed
    they do nothing."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def call(self, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback(*args)`` in the loop, from any thread."""
        loop = self._loop
        if loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def deliver_messages(
        self, connection: mqtt.Connection, handler: MessageHandler
    ) -> ConnectionActivity:
        """Have every message ``connection`` receives, subscribed or late after an
        unsubscribe, reach ``handler``; returns the record of its activity."""
        # The callback holds the activity record, not the connection: awscrt keeps the
        # callback, and a cycle through it could never be collected.
        activity = ConnectionActivity()

        def received(topic: str, payload: bytes) -> None:
            activity.last_message_at = asyncio.get_running_loop().time()
            handler(topic, payload)

        def on_message(topic: str, payload: bytes, **kwargs: Any) -> None:
            self.call(received, topic, bytes(payload))

        connection.on_message(on_message)
        return activity

    def on_interrupted(
        self, handler: Callable[[mqtt.Connection, str], None]
    ) -> Callable[..., None]:
        """awscrt's ``on_connection_interrupted``, calling ``handler(connection, error)``."""

        def interrupted(connection: mqtt.Connection, error: Exception, **kwargs: Any) -> None:
            self.call(handler, connection, str(error))

        return interrupted

    def on_resumed(
        self, handler: Callable[[mqtt.Connection, mqtt.ConnectReturnCode, bool], None]
    ) -> Callable[..., None]:
        """awscrt's ``on_connection_resumed``, calling ``handler(connection, return_code,
        session_present)``."""

        def resumed(
            connection: mqtt.Connection,
            return_code: mqtt.ConnectReturnCode,
            session_present: bool,
            **kwargs: Any,
        ) -> None:
            self.call(handler, connection, return_code, session_present)

        return resumed
