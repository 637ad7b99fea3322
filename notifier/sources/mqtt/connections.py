"""The connection factory: awscrt MQTT 3.1.1 connections made from the settings, connected,
subscribed and closed, each wait bounded and each failure an :class:`MqttConnectError`.

A connection made with a token authenticates the way AWS IoT's custom authorizers expect;
the other transports use a device certificate (``mtls``) or SigV4 (``websockets``). A broker
that turns a token away is told apart (:class:`MqttAuthError`) from one that cannot be
reached. AWS IoT accepts one CONNECT per second per client id: the factory spaces the
CONNECTs it makes with one client id at least that far apart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from awscrt import auth, io, mqtt
from awscrt.exceptions import AwsCrtError
from awsiot import mqtt_connection_builder

from notifier.aws.iot_tokens import IotToken
from notifier.config import AwsSettings, MqttSettings
from notifier.sources.mqtt.bridge import outcome

log = logging.getLogger(__name__)

DEFAULT_PORTS = {
    "custom-auth": 443,
    "custom-auth-websockets": 443,
    "tcp": 1883,
    "mtls": 8883,
    "websockets": 443,
}
# How long the client waits for CONNACK (and for each PINGRESP): its default, 3 s, is less
# than IoT Core's custom authorizer may take to answer a CONNECT (its Lambda may run 5 s).
RESPONSE_TIMEOUT_MS = 10_000
# The client takes one setting for both waits and wants it shorter than the keep-alive: with
# a short keep-alive the wait is this much less than it, not less than the client's default.
RESPONSE_TIMEOUT_MARGIN_MS = 500
CONNECTS_PER_CLIENT_ID_INTERVAL = 1.0
"""Seconds between two CONNECTs with one client id (AWS IoT: 1 per second per client id)."""


def response_timeout_ms(keep_alive_secs: int) -> int:
    """How long a connection with ``keep_alive_secs`` waits for CONNACK and each PINGRESP:
    ``RESPONSE_TIMEOUT_MS``, or just under the keep-alive when that is shorter (4.5 s at 5 s)."""
    return min(RESPONSE_TIMEOUT_MS, keep_alive_secs * 1000 - RESPONSE_TIMEOUT_MARGIN_MS)


# How a broker turns a CONNECT away: a CONNACK refusal, or (IoT Core, amqtt) hanging up.
_REFUSED_RETURN_CODES = {
    mqtt.ConnectReturnCode.BAD_USERNAME_OR_PASSWORD,
    mqtt.ConnectReturnCode.NOT_AUTHORIZED,
    mqtt.ConnectReturnCode.IDENTIFIER_REJECTED,
}
_REFUSED_ERRORS = {"AWS_ERROR_MQTT_PROTOCOL_ERROR", "AWS_ERROR_MQTT_UNEXPECTED_HANGUP"}

Interrupted = Callable[..., None]
"""awscrt's ``on_connection_interrupted(connection, error)``, on one of its threads."""
Resumed = Callable[..., None]
"""awscrt's ``on_connection_resumed(connection, return_code, session_present)``."""


class MqttConnectError(Exception):
    pass


class MqttAuthError(MqttConnectError):
    """No token, or the broker refused the one we have."""


class ConnectionFactory:
    """Makes, connects, subscribes and closes the connections of one subscription;
    ``connects`` spaces the CONNECTs of each client id (share one among factories whose
    connections may use the same client ids)."""

    def __init__(
        self,
        settings: MqttSettings,
        endpoint: str,
        *,
        label: str = "MQTT",
        aws: AwsSettings | None = None,
        connects: ConnectSpacing | None = None,
    ) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self.port = settings.port or DEFAULT_PORTS[settings.transport]
        self.label = label
        self._aws = aws or AwsSettings()
        self._connects = connects or ConnectSpacing()

    def build(
        self,
        client_id: str,
        token: IotToken | None,
        *,
        clean: bool,
        on_interrupted: Interrupted,
        on_resumed: Resumed,
    ) -> mqtt.Connection:
        """A new connection (not yet connected) for the configured transport."""
        s = self.settings
        common: dict[str, Any] = {
            "client_id": client_id,
            "clean_session": clean,
            "keep_alive_secs": s.keep_alive_secs,
            "ping_timeout_ms": response_timeout_ms(s.keep_alive_secs),
            "reconnect_min_timeout_secs": s.reconnect_min_secs,
            "reconnect_max_timeout_secs": s.reconnect_max_secs,
            "on_connection_interrupted": on_interrupted,
            "on_connection_resumed": on_resumed,
        }
        if s.transport == "tcp":
            assert token is not None
            bootstrap = io.ClientBootstrap.get_or_create_static_default()
            return mqtt.Connection(
                client=mqtt.Client(bootstrap),
                host_name=self.endpoint,
                port=self.port,
                username=token.username,
                password=token.password,
                disable_metrics=True,
                **common,
            )
        if s.transport in ("custom-auth", "custom-auth-websockets"):
            assert token is not None
            build = (
                mqtt_connection_builder.direct_with_custom_authorizer
                if s.transport == "custom-auth"
                else mqtt_connection_builder.websockets_with_custom_authorizer
            )
            connection = build(
                auth_username=token.client_id,
                auth_authorizer_name=token.authorizer_name,
                auth_password=token.password,
                endpoint=self.endpoint,
                port=self.port,
                ca_filepath=s.ca_file,
                enable_metrics_collection=False,
                **common,
            )
            # The direct builder always sets IoT Core's port 443; a connection's port may be
            # changed until it connects (another broker, such as the local stack's).
            connection.port = self.port
            return connection
        if s.transport == "mtls":
            return mqtt_connection_builder.mtls_from_path(
                endpoint=self.endpoint,
                port=self.port,
                cert_filepath=s.cert_file,
                pri_key_filepath=s.key_file,
                ca_filepath=s.ca_file,
                **common,
            )
        return mqtt_connection_builder.websockets_with_default_aws_signing(
            endpoint=self.endpoint,
            port=self.port,
            region=self._aws.region,
            credentials_provider=self._credentials(),
            ca_filepath=s.ca_file,
            **common,
        )

    async def connect(self, connection: mqtt.Connection, with_token: bool) -> None:
        """CONNECT, at least :data:`CONNECTS_PER_CLIENT_ID_INTERVAL` after the last one with
        the same client id; a refusal of a token raises :class:`MqttAuthError`."""
        await self._connects.turn(connection.client_id)
        try:
            await self.wait(connection.connect(), "connect")
        except MqttConnectError as exc:
            cause = exc.__cause__
            refused = (isinstance(cause, AwsCrtError) and cause.name in _REFUSED_ERRORS) or any(
                code in cause.args for code in _REFUSED_RETURN_CODES if cause is not None
            )
            if with_token and refused:
                raise MqttAuthError(
                    f"MQTT broker {self.endpoint}:{self.port} refused the token ({cause})"
                ) from cause
            raise

    async def subscribe(
        self, connection: mqtt.Connection, topic_filter: str, with_token: bool
    ) -> None:
        """Subscribe ``connection`` to ``topic_filter`` with QoS 1; raises unless the broker
        granted it."""
        subscribe, _packet_id = connection.subscribe(topic_filter, mqtt.QoS.AT_LEAST_ONCE)
        try:
            result = await self.wait(subscribe, "subscribe")
        except MqttConnectError as exc:
            if not isinstance(exc.__cause__, mqtt.SubscribeError):
                raise
            result = {"qos": None}
        if result.get("qos") is None:
            error = MqttAuthError if with_token else MqttConnectError
            raise error(f"subscription to {topic_filter} was refused")

    async def close(self, connection: mqtt.Connection) -> None:
        try:
            async with asyncio.timeout(5):
                await outcome(connection.disconnect())
        except Exception as exc:  # the connection is going away either way
            log.debug("%s disconnect: %s", self.label, exc)

    async def wait(self, future: Future[Any], what: str) -> Any:
        """The result of one of awscrt's futures, within ``connect_timeout``."""
        # asyncio.timeout, here as in every wait of this package, not wait_for: on Python
        # 3.11 wait_for loses a cancellation that comes as the awaited call ends, and the
        # retry loop it was meant to stop would go on, and stop() wait for it forever.
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                return await outcome(future)
        except TimeoutError:
            raise MqttConnectError(
                f"MQTT {what} to {self.endpoint}:{self.port} timed out"
            ) from None
        except Exception as exc:
            if isinstance(exc, MqttConnectError):
                raise
            raise MqttConnectError(
                f"MQTT {what} to {self.endpoint}:{self.port} failed: {exc}"
            ) from exc

    def _credentials(self) -> auth.AwsCredentialsProvider:
        if self._aws.access_key_id and self._aws.secret_access_key:
            return auth.AwsCredentialsProvider.new_static(
                self._aws.access_key_id, self._aws.secret_access_key
            )
        bootstrap = io.ClientBootstrap.get_or_create_static_default()
        if self._aws.profile:
            profile = self._aws.profile
            return auth.AwsCredentialsProvider.new_profile(bootstrap, profile_name=profile)
        return auth.AwsCredentialsProvider.new_default_chain(bootstrap)


class ConnectSpacing:
    """When each client id last sent a CONNECT; a new one waits until the interval has
    passed. Shared by every connection of a process that may reuse a client id."""

    def __init__(
        self,
        interval: float = CONNECTS_PER_CLIENT_ID_INTERVAL,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}

    def now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def delay(self, client_id: str) -> float:
        """Seconds until ``client_id`` may CONNECT again (0: now)."""
        last = self._last.get(client_id)
        return 0.0 if last is None else max(0.0, last + self.interval - self.now())

    async def turn(self, client_id: str) -> None:
        """Wait for ``client_id``'s turn to CONNECT and take it."""
        delay = self.delay(client_id)
        if delay > 0:
            await asyncio.sleep(delay)
        self._last[client_id] = self.now()
        if len(self._last) > 1024:  # ids of tokens long replaced
            cutoff = self.now() - self.interval
            self._last = {cid: at for cid, at in self._last.items() if at > cutoff}
