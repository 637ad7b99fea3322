"""The local MQTT broker (amqtt), standing in for AWS IoT Core's message broker.

Every client must authenticate; ``broker_auth`` does it the way IoT Core's custom
authentication does, and enforces what the authorizer granted.
"""

from __future__ import annotations

import logging
from typing import Any

from amqtt.errors import BrokerError

from notifier.lifecycle import Service
from notifier.local.broker_auth import AccessControl, IotAuthPlugin
from notifier.local.broker_sessions import SessionKeepingBroker


class PortInUseError(Exception):
    def __init__(self, what: str, host: str, port: int, option: str) -> None:
        super().__init__(f"{what}: {host}:{port} is already in use (choose another with {option})")
        self.port = port
        self.option = option


class LocalBroker(Service):
    """amqtt on loopback; ``port`` 0 picks a free port, readable after start.

    ``access`` decides who may connect and what each client may do.
    """

    def __init__(self, host: str, port: int, access: AccessControl) -> None:
        self.host = host
        self.port = port
        self.access = access
        self._broker: SessionKeepingBroker | None = None

    def config(self) -> dict[str, Any]:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {f"{IotAuthPlugin.__module__}.{IotAuthPlugin.__qualname__}": {}},
        }

    @property
    def running(self) -> bool:
        return self._broker is not None

    async def start(self) -> None:
        # amqtt logs a full traceback for a failed bind; the error below says it in one line.
        logging.getLogger("amqtt").setLevel(logging.CRITICAL)
        broker = SessionKeepingBroker(self.config())
        plugin = broker.plugins_manager.get_plugin(IotAuthPlugin.__name__)
        assert isinstance(plugin, IotAuthPlugin)
        plugin.access = self.access
        try:
            await broker.start()
        except BrokerError as exc:
            if isinstance(exc.__cause__, OSError):
                raise PortInUseError("MQTT broker", self.host, self.port, "--mqtt-port") from exc
            raise
        finally:
            logging.getLogger("amqtt").setLevel(logging.WARNING)
        self._broker = broker
        server = broker._servers["default"].instance
        self.port = server.sockets[0].getsockname()[1]

    async def publish(self, topic: str, payload: bytes) -> None:
        """Deliver ``payload`` on ``topic`` from inside the broker, as IoT Core's data plane
        does; each subscriber's policy still decides whether it receives it."""
        assert self._broker is not None, "the broker is not running"
        await self._broker.internal_message_broadcast(topic, payload)

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
