"""amqtt's broker, with a persistent session that keeps delivering after a take-over.

A client whose link was cut reconnects with the same client id and a persistent session
before the broker has noticed that its old connection is dead. amqtt then takes the old
connection over: it stops the old connection's handler and attaches the session to the
new one. But the old connection's message loop then runs its ordinary disconnect, which
marks the *shared* session disconnected, while the new connection is live: from then on the
broker keeps every message for that session as if the client were away, and delivers
nothing. :class:`SessionKeepingBroker` remembers which handlers were taken over and lets
their disconnect stop only themselves, so the session stays connected to its new handler.

amqtt also iterates over its subscriptions while awaiting inside the loop, so a client
subscribing during a broadcast ended that broadcast ("dictionary changed size during
iteration") and the message never reached the subscribers after it. Its loops walk a
snapshot of them instead.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterator
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session


class _Subscriptions(dict[str, list[tuple[Session, int]]]):
    """amqtt's subscriptions by topic filter, iterated over a snapshot (of each filter's
    subscribers too: one leaving must not make the loop skip the next)."""

    def items(self) -> list[tuple[str, list[tuple[Session, int]]]]:  # type: ignore[override]  # a snapshot
        return [(topic, list(subscribers)) for topic, subscribers in super().items()]

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().__iter__()))


class SessionKeepingBroker(Broker):  # type: ignore[misc]  # amqtt is untyped
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._taken_over: weakref.WeakSet[BrokerProtocolHandler] = weakref.WeakSet()
        subscriptions: dict[str, list[tuple[Session, int]]] = self._subscriptions  # type: ignore[has-type]  # amqtt is untyped
        self._subscriptions = _Subscriptions(subscriptions)

    async def _initialize_client_session(
        self,
        reader: ReaderAdapter,
        writer: WriterAdapter,
        remote_address: str,
        remote_port: int,
    ) -> tuple[BrokerProtocolHandler, Session]:
        handler, session = await super()._initialize_client_session(
            reader, writer, remote_address, remote_port
        )
        # The session of a connection still live: this connection is about to take it over.
        current = self._sessions.get(session.client_id or "")
        if current is not None and current[0] is session and session.transitions.is_connected():
            self._taken_over.add(current[1])
        return handler, session

    async def _handle_disconnect(
        self,
        client_session: Session,
        handler: BrokerProtocolHandler,
        disconnect_waiter: asyncio.Future[Any],
    ) -> None:
        if handler in self._taken_over:
            # The session lives on in the connection that took it over.
            self._taken_over.discard(handler)
            await self._stop_handler(handler)
            return
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)
