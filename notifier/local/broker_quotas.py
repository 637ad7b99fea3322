"""IoT Core's per-connection limits on the local broker (amqtt).

Each connection may publish, and be delivered, at most ``iot-publish-rate`` messages and
``iot-throughput`` bytes within any one second; IoT Core throttles beyond that, and where its
pages are silent on whether deliveries count, the stricter reading is taken: both directions
count, each on its own. What exceeds them is discarded and counted (a publish is still
acknowledged to its sender, as IoT does). A publish whose payload is over ``iot-payload``
fails for its publisher: the broker closes the connection without acknowledging it. A
SUBSCRIBE that would take a connection past ``iot-subscriptions`` closes it too, and a client
id may CONNECT once a second (``iot-connect-rate``): a faster CONNECT is refused.

The IoT data plane's own connection (``iot_core``) is exempt: it stands for IoT Core's HTTP
publish API, whose limits are per account and whose payload limit the endpoint checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import ListenerConfig
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session

from notifier.local.quotas import QuotaSettings
from notifier.local.settings import PUBLISHER_CLIENT_ID
from notifier.local.throttling import Clock, QuotaEvents, SlidingWindow, rate_window


class ConnectionQuotas:
    """The limits' state for every connection, and the busiest connection seen."""

    def __init__(
        self, settings: QuotaSettings, events: QuotaEvents, clock: Clock = time.monotonic
    ) -> None:
        self.settings = settings
        self.events = events
        self._clock = clock
        self._windows: dict[tuple[str, str], tuple[SlidingWindow, SlidingWindow]] = {}
        self._connects: dict[str, SlidingWindow] = {}
        self.peak_messages_per_second = 0
        """The most messages one connection published, or was delivered, within a second."""
        self.peak_client_id: str | None = None

    def reset_peak(self) -> None:
        """Measure the busiest connection from now on."""
        self.peak_messages_per_second = 0
        self.peak_client_id = None
        for messages, _ in self._windows.values():
            messages.peak = 0

    def _limit(self, value: float) -> float | None:
        return value if self.settings.enabled else None

    def connection_opened(self, client_id: str) -> None:
        """A new connection of ``client_id``: its rates start afresh."""
        for direction in ("in", "out"):
            self._windows.pop((client_id, direction), None)

    def connect(self, client_id: str) -> bool:
        if client_id == PUBLISHER_CLIENT_ID:
            return True
        window = self._connects.get(client_id)
        if window is None:
            window = self._connects[client_id] = rate_window(
                self._limit(self.settings.iot_connect_rate)
            )
        if window.admit(self._clock()):
            return True
        self.events.record(
            "iot_connects_refused",
            f"MQTT CONNECT of {client_id!r} refused: over "
            f"{self.settings.iot_connect_rate:g} a second for one client id",
        )
        return False

    def payload_allowed(self, client_id: str, size: int) -> bool:
        if not self.settings.enabled or size <= self.settings.iot_payload:
            return True
        self.events.record(
            "iot_payload_refused",
            f"MQTT publish of {size} bytes by {client_id!r} refused (the payload limit is "
            f"{self.settings.iot_payload} bytes); its connection is closed",
        )
        return False

    def subscriptions_allowed(self, client_id: str, count: int) -> bool:
        if not self.settings.enabled or count <= self.settings.iot_subscriptions:
            return True
        self.events.record(
            "iot_subscriptions_refused",
            f"SUBSCRIBE by {client_id!r} refused: it would hold {count} subscriptions (at "
            f"most {self.settings.iot_subscriptions}); its connection is closed",
        )
        return False

    def publish(self, client_id: str, size: int) -> bool:
        """Whether an inbound publish of ``size`` bytes is within its connection's rates."""
        if client_id == PUBLISHER_CLIENT_ID:
            return True
        return self._admit(client_id, "in", size)

    def deliver(self, client_id: str, size: int) -> bool:
        """Whether a delivery of ``size`` bytes to ``client_id`` is within its rates."""
        return self._admit(client_id, "out", size)

    def _admit(self, client_id: str, direction: str, size: int) -> bool:
        key = (client_id, direction)
        windows = self._windows.get(key)
        if windows is None:
            windows = self._windows[key] = (
                rate_window(self._limit(self.settings.iot_publish_rate)),
                SlidingWindow(self._limit(self.settings.iot_throughput)),
            )
        messages, throughput = windows
        now = self._clock()
        if throughput.fits(now, size) and messages.fits(now):
            throughput.add(now, size)
            messages.add(now)
            if messages.peak > self.peak_messages_per_second:
                self.peak_messages_per_second = int(messages.peak)
                self.peak_client_id = client_id
            return True
        what = "publishes by" if direction == "in" else "deliveries to"
        self.events.record(
            "iot_discarded",
            f"MQTT {what} {client_id!r} over {self.settings.iot_publish_rate:g} messages or "
            f"{self.settings.iot_throughput:g} bytes a second: discarded",
        )
        return False


class QuotaBroker(Broker):  # type: ignore[misc]  # amqtt is untyped
    """amqtt with :class:`ConnectionQuotas` applied, once :attr:`quotas` is set."""

    quotas: ConnectionQuotas | None = None

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        handler, session = await super()._initialize_client_session(
            reader, writer, remote_address, remote_port
        )
        if self.quotas is not None and session.client_id is not None:
            self.quotas.connection_opened(session.client_id)
            _apply_quotas(handler, session.client_id, self.quotas)
        return handler, session

    async def _authenticate(self, session: Session, listener: ListenerConfig) -> bool:
        authenticated: bool = await super()._authenticate(session, listener)
        if not authenticated or self.quotas is None or session.client_id is None:
            return authenticated
        return self.quotas.connect(session.client_id)

    async def _handle_message_delivery(
        self,
        client_session: Session,
        handler: BrokerProtocolHandler,
        wait_deliver: asyncio.Future[Any],
    ) -> bool:
        message = wait_deliver.result()
        data = getattr(message, "data", None)
        if (
            self.quotas is not None
            and data is not None
            and not self.quotas.publish(client_session.client_id or "", len(data))
        ):
            return True  # discarded; the connection stays
        result: bool = await super()._handle_message_delivery(client_session, handler, wait_deliver)
        return result

    async def _handle_subscription(
        self,
        client_session: Session,
        handler: BrokerProtocolHandler,
        subscribe_waiter: asyncio.Future[Any],
    ) -> None:
        if self.quotas is not None:
            client_id = client_session.client_id or ""
            held = {
                topic_filter
                for topic_filter, subscribers in self._subscriptions.items()
                if any(s.client_id == client_id for s, _ in subscribers)
            }
            wanted = {topic_filter for topic_filter, _ in subscribe_waiter.result().topics}
            if not self.quotas.subscriptions_allowed(client_id, len(held | wanted)):
                await _close(handler)
                return
        await super()._handle_subscription(client_session, handler, subscribe_waiter)


def _apply_quotas(handler: BrokerProtocolHandler, client_id: str, quotas: ConnectionQuotas) -> None:
    """An oversized publish is not acknowledged: its connection is closed instead. A delivery
    over the connection's rates is dropped as its turn to be sent comes, so that the rates
    hold for what the connection carries, however late a busy broker sends it."""
    receive, send = handler.handle_publish, handler.mqtt_publish

    async def handle_publish(packet: Any) -> None:
        data = packet.data
        if data is not None and not quotas.payload_allowed(client_id, len(data)):
            await _close(handler)
            return
        await receive(packet)

    async def mqtt_publish(topic: str, data: bytes, *args: Any, **kwargs: Any) -> Any:
        if not quotas.deliver(client_id, len(data)):
            return None
        return await send(topic, data, *args, **kwargs)

    handler.handle_publish = handle_publish  # per connection
    handler.mqtt_publish = mqtt_publish  # per connection


async def _close(handler: BrokerProtocolHandler) -> None:
    """Close the handler's connection (the client's end may already be going)."""
    if handler.writer is not None:
        with contextlib.suppress(OSError):  # TLS: data after the close notify
            await handler.writer.close()
