"""The bridge from awscrt's threads to the event loop.

awscrt runs every callback (a message, a lost link, a resumed one) on its own threads. Each
callback made here only hands its arguments over to the event loop with
``call_soon_threadsafe``; everything else happens in the loop. Messages that arrive before
the loop has taken the previous ones of their connection go with them: one wake-up of the
loop (a write to its self-pipe, a read in the loop) for all of them.

The futures awscrt returns (of a connect, a subscribe, a disconnect) are awaited with
:func:`outcome`, which never cancels them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from awscrt import mqtt

T = TypeVar("T")

MessageHandler = Callable[[str, bytes], None]
"""Called in the event loop with each message's topic and payload."""


async def outcome(future: Future[T]) -> T:
    """The result of one of awscrt's futures. A wait that is cancelled (a timeout, a stop)
    leaves the future alone: awscrt completes it whatever became of the wait, and one
    cancelled under it raises ``InvalidStateError`` on awscrt's thread."""
    # shield also reads an outcome that comes after the wait was cancelled, so that it is
    # not reported as never retrieved.
    return await asyncio.shield(asyncio.wrap_future(future))


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
        unsubscribe, reach ``handler``, in the order received; returns the record of its
        activity."""
        # The callback holds the activity record, not the connection: awscrt keeps the
        # callback, and a cycle through it could never be collected.
        activity = ConnectionActivity()
        pending: deque[tuple[str, bytes]] = deque()
        """Received, not yet handed over; a turn of the loop is due to take them whenever
        there are any."""

        def received() -> None:
            if pending:
                activity.last_message_at = asyncio.get_running_loop().time()
            try:
                while pending:
                    handler(*pending.popleft())
            finally:
                if pending:  # the handler raised: the rest in a turn of their own
                    self.call(received)

        def on_message(topic: str, payload: bytes, **kwargs: Any) -> None:
            pending.append((topic, bytes(payload)))
            if len(pending) == 1:  # none waiting before it: the loop is to be woken
                self.call(received)

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
