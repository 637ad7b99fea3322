"""amqtt's broker, stopped so that no client stays connected to it.

amqtt's shutdown stops the handlers of the sessions it knows, one after another, and only
then closes its listeners; and closing an asyncio server (before Python 3.13) leaves open
the connections it accepted. On a busy event loop that shutdown takes seconds: a client
whose connection it closed early reconnects meanwhile, is accepted, and is then served by
the stopped broker, which acknowledges its CONNECT, its pings and its publishes and
delivers them to no one. Content with that connection, the client never comes to the
broker started after. A connection accepted just before the stop, whose CONNECT had not
yet made it a session, is left the same way. :class:`ClosingBroker` stops listening first,
then closes every connection it accepted, before amqtt's own shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from amqtt.broker import Broker
from websockets.asyncio.server import ServerConnection


class ClosingBroker(Broker):  # type: ignore[misc]  # amqtt is untyped
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stopping = False
        self._accepted: set[asyncio.WriteTransport] = set()

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        await self._serve(writer.transport, super().stream_connected(reader, writer, listener_name))

    async def ws_connected(self, websocket: ServerConnection, listener_name: str) -> None:
        await self._serve(websocket.transport, super().ws_connected(websocket, listener_name))

    async def _serve(
        self, transport: asyncio.WriteTransport, serving: Coroutine[Any, Any, None]
    ) -> None:
        if self._stopping:  # accepted just before the listener closed
            serving.close()
            transport.abort()
            return
        self._accepted.add(transport)
        try:
            await serving
        finally:
            self._accepted.discard(transport)

    async def shutdown(self) -> None:
        self._stopping = True
        for server in self._servers.values():
            if server.instance is not None:
                server.instance.close()
        # Aborted, not closed: a closed connection still waits for a client that no longer
        # reads to take what was written to it.
        for transport in list(self._accepted):
            transport.abort()
        await super().shutdown()
