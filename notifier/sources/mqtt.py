"""The primary completion source: one awscrt MQTT 3.1.1 connection per daemon.

Subscribed with QoS 1 to ``<topic_root>/<instance>/#``, where the workflows publish
``<topic_root>/<subtopic>/<txnId>``. awscrt runs its callbacks on its own threads; every
callback only hands its arguments over to the event loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future
from typing import Any

from awscrt import auth, io, mqtt
from awsiot import mqtt_connection_builder

from notifier.aws import AwsSettings
from notifier.config import MqttSettings
from notifier.lifecycle import Service
from notifier.sources import InvalidNotificationError, parse_notification
from notifier.waiters import Registry

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"tcp": 1883, "mtls": 8883, "websockets": 443}


class MqttConnectError(Exception):
    pass


class MqttSource(Service):
    def __init__(
        self,
        settings: MqttSettings,
        *,
        instance_id: str,
        registry: Registry,
        endpoint: str,
        aws: AwsSettings | None = None,
    ) -> None:
        self.settings = settings
        self.instance_id = instance_id
        self.registry = registry
        self.endpoint = endpoint
        self.port = settings.port or DEFAULT_PORTS[settings.transport]
        self.topic_filter = f"{settings.topic_root}/{instance_id}/#"
        self.connected = False
        self.received = 0
        self.ignored = 0
        self._aws = aws or AwsSettings()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connection: mqtt.Connection | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._connection = self._build()
        try:
            await self._await(self._connection.connect(), "connect")
            self.connected = True
            subscribe, _packet_id = self._connection.subscribe(
                self.topic_filter, mqtt.QoS.AT_LEAST_ONCE, self._on_message
            )
            result = await self._await(subscribe, "subscribe")
            if result.get("qos") is None:
                raise MqttConnectError(f"subscription to {self.topic_filter} was refused")
        except BaseException:
            await self._disconnect()
            raise
        log.info(
            "MQTT connected to %s:%s as %s, subscribed to %s",
            self.endpoint, self.port, self.instance_id, self.topic_filter,
        )  # fmt: skip

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._disconnect()

    async def _await(self, future: Future[Any], what: str) -> Any:
        try:
            timeout = self.settings.connect_timeout
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
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

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        self.connected = False
        if connection is not None:
            try:
                await asyncio.wait_for(asyncio.wrap_future(connection.disconnect()), 5)
            except Exception as exc:  # the connection is going away either way
                log.debug("MQTT disconnect: %s", exc)

    def _build(self) -> mqtt.Connection:
        s = self.settings
        common: dict[str, Any] = {
            "client_id": self.instance_id,
            "clean_session": False,
            "keep_alive_secs": s.keep_alive_secs,
            "reconnect_min_timeout_secs": s.reconnect_min_secs,
            "reconnect_max_timeout_secs": s.reconnect_max_secs,
            "on_connection_interrupted": self._on_interrupted,
            "on_connection_resumed": self._on_resumed,
        }
        if s.transport == "tcp":
            bootstrap = io.ClientBootstrap.get_or_create_static_default()
            return mqtt.Connection(
                client=mqtt.Client(bootstrap),
                host_name=self.endpoint,
                port=self.port,
                disable_metrics=True,
                **common,
            )
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

    # awscrt threads -> event loop

    def _call_in_loop(self, callback: Any, *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def _on_message(self, topic: str, payload: bytes, **kwargs: Any) -> None:
        self._call_in_loop(self._handle_message, topic, bytes(payload))

    def _on_interrupted(self, connection: mqtt.Connection, error: Exception, **kwargs: Any) -> None:
        self._call_in_loop(self._handle_interrupted, str(error))

    def _on_resumed(
        self,
        connection: mqtt.Connection,
        return_code: mqtt.ConnectReturnCode,
        session_present: bool,
        **kwargs: Any,
    ) -> None:
        self._call_in_loop(self._handle_resumed, return_code, session_present)

    # in the event loop

    def _handle_message(self, topic: str, payload: bytes) -> None:
        self.received += 1
        levels = topic.split("/")
        if len(levels) != 3 or levels[:2] != [self.settings.topic_root, self.instance_id]:
            self.ignored += 1
            log.warning("MQTT: ignoring a message on unexpected topic %r", topic)
            return
        try:
            completion = parse_notification(payload, via="mqtt", expected_txn_id=levels[2])
        except InvalidNotificationError as exc:
            self.ignored += 1
            log.warning("MQTT: ignoring an invalid completion on %s: %s", topic, exc)
            return
        if self.registry.resolve(levels[2], completion):
            log.debug("MQTT: %s %s", levels[2], completion.status)
        elif self.registry.get(levels[2]) is None:
            self.ignored += 1
            # Expected, e.g. for executions other workflows start with our subtopic.
            log.debug("MQTT: ignoring a completion for unknown transaction %s", levels[2])
        else:
            self.ignored += 1
            log.debug("MQTT: duplicate completion for %s", levels[2])

    def _handle_interrupted(self, error: str) -> None:
        self.connected = False
        log.warning("MQTT connection interrupted (%s); reconnecting", error)

    def _handle_resumed(self, return_code: mqtt.ConnectReturnCode, session_present: bool) -> None:
        if return_code != mqtt.ConnectReturnCode.ACCEPTED:
            log.error("MQTT reconnect refused: %s", return_code)
            return
        self.connected = True
        log.info("MQTT connection resumed (session present: %s)", session_present)
        if not session_present:
            task = asyncio.get_running_loop().create_task(self._resubscribe())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _resubscribe(self) -> None:
        delay = float(self.settings.reconnect_min_secs)
        while self._connection is not None:
            try:
                future, _packet_id = self._connection.resubscribe_existing_topics()
                if future is not None:
                    await asyncio.wait_for(
                        asyncio.wrap_future(future), self.settings.connect_timeout
                    )
                log.info("MQTT: resubscribed to %s", self.topic_filter)
                return
            except Exception as exc:
                log.error("MQTT: resubscribing failed (%s); retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.reconnect_max_secs)
