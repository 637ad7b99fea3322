"""The local MQTT broker (amqtt), standing in for AWS IoT Core's message broker.

It serves MQTT over TCP, and with a server certificate also MQTT over TLS (ALPN ``mqtt``, as
IoT Core's custom authentication wants it) and MQTT over WebSockets over TLS. Every client
must authenticate; ``broker_auth`` does it the way IoT Core's custom authentication does, and
enforces what the authorizer granted.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import ListenerConfig, ListenerType
from amqtt.errors import BrokerError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session

from notifier.lifecycle import Service
from notifier.local.broker_auth import AccessControl, IotAuthPlugin
from notifier.local.broker_quotas import ConnectionQuotas, QuotaBroker
from notifier.local.broker_sessions import SessionKeepingBroker
from notifier.local.broker_stop import ClosingBroker
from notifier.local.certificates import KeyPair
from notifier.local.ports import PortInUseError

ALPN = {ListenerType.TCP: ["mqtt"], ListenerType.WS: ["http/1.1"]}
"""The TLS ALPN protocol each kind of listener accepts (IoT Core's on port 443)."""


class TlsBroker(QuotaBroker, SessionKeepingBroker, ClosingBroker):
    """amqtt (with IoT Core's quotas, its persistent sessions and its stop fixed), with two
    things its TLS listeners lack: ALPN protocols, which its configuration cannot set, and
    the TLS connection of a resumed persistent session, for which it kept the session's first
    one (so a client certificate would be judged by the first connection's)."""

    @staticmethod
    def _create_ssl_context(listener: ListenerConfig) -> ssl.SSLContext:
        context: ssl.SSLContext = Broker._create_ssl_context(listener)
        context.set_alpn_protocols(ALPN[listener.type])
        return context

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        handler, session = await super()._initialize_client_session(
            reader, writer, remote_address, remote_port
        )
        session.ssl_object = writer.get_ssl_info()
        return handler, session


class LocalBroker(Service):
    """amqtt on loopback; a port 0 picks a free port, readable after start.

    ``access`` decides who may connect and what each client may do. With ``tls`` (the server
    certificate, signed by ``ca_file``'s CA) it also listens on ``tls_port`` (MQTT over TLS)
    and ``wss_port`` (MQTT over WebSockets over TLS); clients may present a certificate of
    that CA. ``quotas`` holds IoT Core's per-connection limits, unset: none.
    """

    def __init__(
        self,
        host: str,
        port: int,
        access: AccessControl,
        *,
        tls: KeyPair | None = None,
        ca_file: str | None = None,
        tls_port: int = 0,
        wss_port: int = 0,
        quotas: ConnectionQuotas | None = None,
    ) -> None:
        self.host = host
        self.quotas = quotas
        self.port = port
        self.tls_port = tls_port
        self.wss_port = wss_port
        self.access = access
        self.tls = tls
        self.ca_file = ca_file
        self._broker: TlsBroker | None = None

    def config(self) -> dict[str, Any]:
        listeners: dict[str, Any] = {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}}
        if self.tls is not None:
            secured = {
                "ssl": True,
                "certfile": str(self.tls.cert_file),
                "keyfile": str(self.tls.key_file),
                "cafile": self.ca_file,
            }
            listeners["tls"] = {"type": "tcp", "bind": f"{self.host}:{self.tls_port}", **secured}
            listeners["wss"] = {"type": "ws", "bind": f"{self.host}:{self.wss_port}", **secured}
        return {
            "listeners": listeners,
            "plugins": {f"{IotAuthPlugin.__module__}.{IotAuthPlugin.__qualname__}": {}},
        }

    @property
    def running(self) -> bool:
        return self._broker is not None

    async def start(self) -> None:
        # amqtt logs a full traceback for a failed bind; the error below says it in one line.
        logging.getLogger("amqtt").setLevel(logging.CRITICAL)
        broker = TlsBroker(self.config())
        plugin = broker.plugins_manager.get_plugin(IotAuthPlugin.__name__)
        assert isinstance(plugin, IotAuthPlugin)
        plugin.access = self.access
        broker.quotas = self.quotas
        try:
            await broker.start()
        except BrokerError as exc:
            if isinstance(exc.__cause__, OSError):
                port, option = self._port_named_in(str(exc.__cause__))
                raise PortInUseError("MQTT broker", self.host, port, option) from exc
            raise
        finally:
            logging.getLogger("amqtt").setLevel(logging.WARNING)
        self._broker = broker
        self.port = self._bound_port("default")
        if self.tls is not None:
            self.tls_port, self.wss_port = self._bound_port("tls"), self._bound_port("wss")

    def _bound_port(self, listener: str) -> int:
        assert self._broker is not None
        server = self._broker._servers[listener].instance
        sockets = server.sockets
        return int(list(sockets)[0].getsockname()[1])

    def _port_named_in(self, error: str) -> tuple[int, str]:
        """The port (and its option) an error binding a listener is about."""
        ports = [(self.tls_port, "--mqtt-tls-port"), (self.wss_port, "--mqtt-wss-port")]
        for port, option in ports:
            if port and self.tls is not None and f", {port})" in error:
                return port, option
        return self.port, "--mqtt-port"

    async def publish(self, topic: str, payload: bytes) -> None:
        """Deliver ``payload`` on ``topic`` from inside the broker, as IoT Core's data plane
        does; each subscriber's policy still decides whether it receives it."""
        assert self._broker is not None, "the broker is not running"
        await self._broker.internal_message_broadcast(topic, payload)

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
