"""The primary completion source: one awscrt MQTT 3.1.1 connection per daemon.

:class:`MqttSource` is subscribed with QoS 1 to ``<topic_root>/<instance>/#``, where the
workflows publish ``<topic_root>/<subtopic>/<txnId>``. Its connection handling lives in
:class:`MqttSubscription`, which the dashboard's status feed shares. awscrt runs its
callbacks on its own threads; every callback only hands its arguments over to the event
loop with ``call_soon_threadsafe``.

With a token source (the ``custom-auth*`` transports and ``tcp``) the connection authenticates
with an iotauth token, the way AWS IoT's custom authorizers expect it. A connection cannot
change its credentials, so before the token expires a new connection is opened with a fresh
one and subscribed, and only then is the old one unsubscribed and closed: completions keep
arriving throughout (on both, for a moment; the registry keeps the first). A token that
cannot be had or is refused, or a broker that cannot be reached, does not stop the daemon:
it is logged once, the source reports it (``auth_error``, so ``/readyz`` says why) and
retries with backoff. ``connected`` means connected *and* subscribed; :meth:`wait_connected`
lets the reconciler follow it.

"Connected" is a claim the broker makes, not a fact: after every reconnect the subscription
is made again and its SUBACK checked before ``connected`` is true, whatever "session present"
says (a broker may keep a session and lose what it was subscribed to). :meth:`renew` drops
the connection for one with a fresh session, for when another path shows that MQTT stopped
delivering while it claimed to be connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from awscrt import auth, io, mqtt
from awscrt.exceptions import AwsCrtError
from awsiot import mqtt_connection_builder

from notifier.aws import AwsSettings
from notifier.config import MqttSettings
from notifier.iot_tokens import IotToken, TokenError
from notifier.lifecycle import BackgroundTasks, Service
from notifier.sources import InvalidNotificationError, parse_notification
from notifier.waiters import Registry, utcnow

log = logging.getLogger(__name__)

DEFAULT_PORTS = {
    "custom-auth": 443,
    "custom-auth-websockets": 443,
    "tcp": 1883,
    "mtls": 8883,
    "websockets": 443,
}
MIN_REFRESH_DELAY = 1.0
# How long the client waits for CONNACK (and for each PINGRESP): its default, 3 s, is less
# than IoT Core's custom authorizer may take to answer a CONNECT (its Lambda may run 5 s).
RESPONSE_TIMEOUT_MS = 10_000
# The client takes one setting for both waits and wants it shorter than the keep-alive: with
# a short keep-alive the wait is this much less than it, not less than the client's default.
RESPONSE_TIMEOUT_MARGIN_MS = 500


def response_timeout_ms(keep_alive_secs: int) -> int:
    """How long a connection with ``keep_alive_secs`` waits for CONNACK and each PINGRESP:
    ``RESPONSE_TIMEOUT_MS``, or just under the keep-alive when that is shorter (4.5 s at 5 s)."""
    return min(RESPONSE_TIMEOUT_MS, keep_alive_secs * 1000 - RESPONSE_TIMEOUT_MARGIN_MS)


# A replaced connection is closed once it has received nothing for RETIRE_QUIET_SECS after its
# unsubscribe, or after RETIRE_MAX_SECS at the latest.
RETIRE_QUIET_SECS = 1.0
RETIRE_MAX_SECS = 10.0


@dataclass
class ConnectionActivity:
    last_message_at: float = float("-inf")
    """Event-loop time of the connection's last message."""


# How a broker turns a CONNECT away: a CONNACK refusal, or (IoT Core, amqtt) hanging up.
_REFUSED_RETURN_CODES = {
    mqtt.ConnectReturnCode.BAD_USERNAME_OR_PASSWORD,
    mqtt.ConnectReturnCode.NOT_AUTHORIZED,
    mqtt.ConnectReturnCode.IDENTIFIER_REJECTED,
}
_REFUSED_ERRORS = {"AWS_ERROR_MQTT_PROTOCOL_ERROR", "AWS_ERROR_MQTT_UNEXPECTED_HANGUP"}

TokenSource = Callable[[], Awaitable[IotToken]]


class MqttConnectError(Exception):
    pass


class MqttAuthError(MqttConnectError):
    """No token, or the broker refused the one we have."""


class MqttSubscription(Service):
    """One MQTT connection subscribed to ``topic_filter``; subclasses handle the messages.

    ``client_id`` is used by the transports without tokens; with tokens the issuer names it.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str,
        topic_filter: str,
        endpoint: str,
        label: str = "MQTT",
        aws: AwsSettings | None = None,
        tokens: TokenSource | None = None,
        refresh_margin: float = 300.0,
    ) -> None:
        self.settings = settings
        self.label = label
        """What its log lines start with."""
        self.endpoint = endpoint
        self.port = settings.port or DEFAULT_PORTS[settings.transport]
        self.topic_filter = topic_filter
        self.connected = False
        self.subscribed_at: datetime | None = None
        """Since when the current subscription is verified (None while not connected)."""
        self._connected_changed = asyncio.Event()
        self.received = 0
        self.ignored = 0
        self.duplicated = 0
        self.refreshes = 0
        """Connections replaced by one with a fresh token."""
        self.reconnects = 0
        """Connections resumed after a loss."""
        self.renewals = 0
        """Times the connection was distrusted and replaced (:meth:`renew`)."""
        self.auth_error: str | None = None
        """Why the last attempt to get or use a token failed; None once one works."""
        self.auth_failures = 0
        """Attempts to connect with a token that failed."""
        self._own_client_id = client_id
        self.client_id = client_id
        self._aws = aws or AwsSettings()
        self._tokens = tokens
        self._refresh_margin = refresh_margin
        self._token: IotToken | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connection: mqtt.Connection | None = None
        self._tasks = BackgroundTasks()
        self._opening = asyncio.Lock()
        self._renewing = False
        """The current connection is distrusted: the keeper replaces it (:meth:`renew`)."""
        self._wake = asyncio.Event()
        """Wakes the keeper before its time."""
        self._activity: dict[mqtt.Connection, ConnectionActivity] = {}
        """Of each open connection."""

    def handle_message(self, topic: str, payload: bytes) -> None:
        """Called in the event loop for each message received."""
        raise NotImplementedError

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            await self._open()
        except MqttConnectError as exc:
            self._auth_failed(exc)
        self._tasks.start(
            f"{self.label} keeper",
            self._keep_connected_once,
            self._auth_failed,
            expected=(MqttConnectError,),
            retry_min=float(self.settings.reconnect_min_secs),
            retry_max=float(self.settings.reconnect_max_secs),
        )

    async def stop(self) -> None:
        await self._tasks.stop()
        connection, self._connection = self._connection, None
        self._set_connected(False)
        if connection is not None:
            await self._close(connection)

    async def refresh(self) -> None:
        """Connect anew with a fresh token now, then close the current connection."""
        await self._open()

    def renew(self) -> None:
        """Stop trusting the current connection and replace it with one on a fresh session.

        ``connected`` is false from now on, so the sweeps start at once, until a new
        connection is subscribed; the keeper makes it, retrying with backoff. With tokens,
        a new token names a new client id: the new connection is subscribed before the
        current one is closed. Without, the client id is the same, so the current one is
        closed first and the new one asks for a clean session.
        """
        self.renewals += 1
        self._renewing = True
        self._set_connected(False)
        self._wake.set()

    async def _open(self) -> None:
        """Connect and subscribe a new connection (with a new token, if tokens are used), then
        make it the current one and retire the previous."""
        async with self._opening:
            token = await self._new_token() if self._tokens is not None else None
            connection = self._build(token, clean=self._renewing and token is None)
            try:
                await self._connect(connection)
                await self._subscribe(connection, token is not None)
            except BaseException:
                await self._close(connection)
                raise
            previous, self._connection = self._connection, connection
            self._token, self._renewing = token, False
            self.client_id = token.client_id if token is not None else self._own_client_id
            self._set_connected(True)
            if self.auth_error is not None:
                log.info("%s authentication works again", self.label)
            self.auth_error = None
            if previous is not None:
                self.refreshes += 1
                await self._retire(previous)
        log.info(
            "%s connected to %s:%s as %s, subscribed to %s%s", self.label,
            self.endpoint, self.port, self.client_id, self.topic_filter,
            f" (token valid until {token.expires_at.isoformat()})" if token else "",
        )  # fmt: skip

    async def _subscribe(self, connection: mqtt.Connection, with_token: bool) -> None:
        """Subscribe ``connection`` to the topic filter; raises unless the broker granted it."""
        subscribe, _packet_id = connection.subscribe(self.topic_filter, mqtt.QoS.AT_LEAST_ONCE)
        try:
            result = await self._await(subscribe, "subscribe")
        except MqttConnectError as exc:
            if not isinstance(exc.__cause__, mqtt.SubscribeError):
                raise
            result = {"qos": None}
        if result.get("qos") is None:
            error = MqttAuthError if with_token else MqttConnectError
            raise error(f"subscription to {self.topic_filter} was refused")

    async def _new_token(self) -> IotToken:
        assert self._tokens is not None
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                return await self._tokens()
        except TimeoutError:
            raise MqttAuthError("no MQTT token: the token issuer did not answer in time") from None
        except TokenError as exc:
            raise MqttAuthError(f"no MQTT token: {exc}") from None

    async def _connect(self, connection: mqtt.Connection) -> None:
        try:
            await self._await(connection.connect(), "connect")
        except MqttConnectError as exc:
            cause = exc.__cause__
            refused = (isinstance(cause, AwsCrtError) and cause.name in _REFUSED_ERRORS) or any(
                code in cause.args for code in _REFUSED_RETURN_CODES if cause is not None
            )
            if self._tokens is not None and refused:
                raise MqttAuthError(
                    f"MQTT broker {self.endpoint}:{self.port} refused the token ({cause})"
                ) from cause
            raise

    async def _retire(self, connection: mqtt.Connection) -> None:
        """Unsubscribe first, so the broker keeps nothing queued for the old session; then
        take what it had already sent the old connection before closing it, since the new
        one was not yet subscribed when those were routed."""
        try:
            unsubscribe, _packet_id = connection.unsubscribe(self.topic_filter)
            async with asyncio.timeout(5):
                await asyncio.wrap_future(unsubscribe)
        except Exception as exc:
            log.debug("%s unsubscribe of the old connection: %s", self.label, exc)
        await self._quiet(connection)
        await self._close(connection)

    async def _quiet(self, connection: mqtt.Connection) -> None:
        """Return once ``connection`` has received nothing for RETIRE_QUIET_SECS (at most
        RETIRE_MAX_SECS from now)."""
        loop = asyncio.get_running_loop()
        since = loop.time()
        activity = self._activity.get(connection, ConnectionActivity())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RETIRE_MAX_SECS):
                while True:
                    quiet_for = loop.time() - max(since, activity.last_message_at)
                    if quiet_for >= RETIRE_QUIET_SECS:
                        return
                    await asyncio.sleep(RETIRE_QUIET_SECS - quiet_for)

    async def wait_connected(self, value: bool) -> None:
        """Return once ``connected`` is ``value``."""
        while self.connected is not value:
            await self._connected_changed.wait()

    def _set_connected(self, value: bool) -> None:
        if value is self.connected:
            return
        self.connected = value
        self.subscribed_at = utcnow() if value else None
        changed, self._connected_changed = self._connected_changed, asyncio.Event()
        changed.set()

    async def _keep_connected_once(self) -> None:
        """One turn of the keeper: connect when there is no connection (the broker may be
        unreachable at start) or the current one is distrusted (:meth:`renew`); with tokens,
        connect anew with a fresh one shortly before the current one expires. Failures are
        retried with backoff by the loop around it."""
        if self._connection is not None and not self._renewing:
            wait = self._refresh_in() if self._token is not None else None
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass  # time to refresh the token
            self._wake.clear()
            if self._token is None and not self._renewing:
                return
        if self._renewing and self._tokens is None and self._connection is not None:
            # One client id: the new connection would take this one over. Close it first.
            async with self._opening:
                connection, self._connection = self._connection, None
            await self._close(connection)
        await self._open()

    def _refresh_in(self) -> float:
        assert self._token is not None
        remaining = (self._token.expires_at - datetime.now(UTC)).total_seconds()
        return max(MIN_REFRESH_DELAY, remaining - self._refresh_margin)

    def _auth_failed(self, exc: Exception) -> None:
        message = str(exc)
        self.auth_failures += 1
        if message != self.auth_error:
            # One line per distinct failure, not one per retry.
            what = "authentication" if isinstance(exc, MqttAuthError) else "reconnecting"
            log.error("%s %s failed, retrying: %s", self.label, what, message)
        self.auth_error = message

    async def _await(self, future: Future[Any], what: str) -> Any:
        # asyncio.timeout, here as in every wait of this class, not wait_for: on Python 3.11
        # wait_for loses a cancellation that comes as the awaited call ends, and the retry
        # loop it was meant to stop would go on, and stop() wait for it forever.
        try:
            timeout = self.settings.connect_timeout
            async with asyncio.timeout(timeout):
                return await asyncio.wrap_future(future)
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

    async def _close(self, connection: mqtt.Connection) -> None:
        self._activity.pop(connection, None)
        try:
            async with asyncio.timeout(5):
                await asyncio.wrap_future(connection.disconnect())
        except Exception as exc:  # the connection is going away either way
            log.debug("%s disconnect: %s", self.label, exc)

    def _build(self, token: IotToken | None, clean: bool = False) -> mqtt.Connection:
        """A new connection whose every message, subscribed or late after an unsubscribe,
        reaches :meth:`handle_message`."""
        connection = self._build_connection(token, clean)
        # The callback holds the activity record, not the connection: awscrt keeps the
        # callback, and a cycle through it could never be collected.
        activity = self._activity[connection] = ConnectionActivity()

        def on_message(topic: str, payload: bytes, **kwargs: Any) -> None:
            self._call_in_loop(self._handle_message_on, activity, topic, bytes(payload))

        connection.on_message(on_message)
        return connection

    def _build_connection(self, token: IotToken | None, clean: bool) -> mqtt.Connection:
        s = self.settings
        common: dict[str, Any] = {
            "client_id": token.client_id if token is not None else self._own_client_id,
            "clean_session": clean,
            "keep_alive_secs": s.keep_alive_secs,
            "ping_timeout_ms": response_timeout_ms(s.keep_alive_secs),
            "reconnect_min_timeout_secs": s.reconnect_min_secs,
            "reconnect_max_timeout_secs": s.reconnect_max_secs,
            "on_connection_interrupted": self._on_interrupted,
            "on_connection_resumed": self._on_resumed,
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

    def _handle_message_on(self, activity: ConnectionActivity, topic: str, payload: bytes) -> None:
        activity.last_message_at = asyncio.get_running_loop().time()
        self.handle_message(topic, payload)

    def _on_interrupted(self, connection: mqtt.Connection, error: Exception, **kwargs: Any) -> None:
        self._call_in_loop(self._handle_interrupted, connection, str(error))

    def _on_resumed(
        self,
        connection: mqtt.Connection,
        return_code: mqtt.ConnectReturnCode,
        session_present: bool,
        **kwargs: Any,
    ) -> None:
        self._call_in_loop(self._handle_resumed, connection, return_code, session_present)

    # in the event loop

    def _handle_interrupted(self, connection: mqtt.Connection, error: str) -> None:
        if connection is not self._connection:
            return  # one being retired
        self._set_connected(False)
        log.warning("%s connection interrupted (%s); reconnecting", self.label, error)

    def _handle_resumed(
        self,
        connection: mqtt.Connection,
        return_code: mqtt.ConnectReturnCode,
        session_present: bool,
    ) -> None:
        if connection is not self._connection:
            return
        if return_code != mqtt.ConnectReturnCode.ACCEPTED:
            log.error("%s reconnect refused: %s", self.label, return_code)
            return
        self.reconnects += 1
        log.info(
            "%s connection resumed (session present: %s); subscribing again",
            self.label, session_present,
        )  # fmt: skip
        # Not connected until the broker has granted the subscription again: a session it
        # says it kept may have lost it.
        self._set_connected(False)
        self._tasks.once(f"{self.label} resubscribe", self._resubscribe(connection))

    async def _resubscribe(self, connection: mqtt.Connection) -> None:
        delay = float(self.settings.reconnect_min_secs)
        while connection is self._connection:
            try:
                await self._subscribe(connection, self._token is not None)
            except MqttConnectError as exc:
                log.error(
                    "%s: subscribing again failed (%s); retrying in %.0f s", self.label, exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.reconnect_max_secs)
                continue
            log.info("%s: subscribed again to %s", self.label, self.topic_filter)
            self._set_connected(True)
            return


class MqttSource(MqttSubscription):
    """The completion source: ``<topic_root>/<instance>/<txnId>`` messages resolve held
    requests in the registry."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        instance_id: str,
        registry: Registry,
        endpoint: str,
        aws: AwsSettings | None = None,
        tokens: TokenSource | None = None,
        refresh_margin: float = 300.0,
    ) -> None:
        super().__init__(
            settings,
            client_id=instance_id,
            topic_filter=f"{settings.topic_root}/{instance_id}/#",
            endpoint=endpoint,
            aws=aws,
            tokens=tokens,
            refresh_margin=refresh_margin,
        )
        self.instance_id = instance_id
        self.registry = registry

    def handle_message(self, topic: str, payload: bytes) -> None:
        self.received += 1
        levels = topic.split("/")
        if len(levels) != 3 or levels[:2] != [self.settings.topic_root, self.instance_id]:
            self.ignored += 1
            log.warning("MQTT: ignoring a message on unexpected topic %r", topic)
            return
        about = {"txnId": levels[2]}
        try:
            completion = parse_notification(payload, via="mqtt", expected_txn_id=levels[2])
        except InvalidNotificationError as exc:
            self.ignored += 1
            log.warning("MQTT: ignoring an invalid completion on %s: %s", topic, exc, extra=about)
            return
        about["executionArn"] = completion.execution_arn or ""
        if self.registry.resolve(levels[2], completion):
            log.debug("MQTT: completion %s", completion.status, extra=about)
        elif self.registry.get(levels[2]) is None:
            self.ignored += 1
            # Expected, e.g. for executions other workflows start with our subtopic.
            log.debug("MQTT: ignoring a completion for an unknown transaction", extra=about)
        else:
            self.duplicated += 1
            log.debug("MQTT: duplicate completion", extra=about)
