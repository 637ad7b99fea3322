"""One MQTT connection kept subscribed to one topic filter, whatever happens to it.

A token that cannot be had or is refused, or a broker that cannot be reached, does not stop
the daemon: it is logged once, the subscription reports it (``auth_error``, so ``/readyz``
says why) and its keeper retries with backoff. ``connected`` means connected *and*
subscribed; :meth:`MqttSubscription.wait_connected` lets others follow it.

"Connected" is a claim the broker makes, not a fact: after every reconnect the subscription
is made again and its SUBACK checked before ``connected`` is true, whatever "session present"
says (a broker may keep a session and lose what it was subscribed to).
:meth:`MqttSubscription.renew` drops the connection for one with a fresh session, for when
another path shows that MQTT stopped delivering while it claimed to be connected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from awscrt import mqtt

from notifier.aws.iot_tokens import IotToken
from notifier.config import AwsSettings, MqttSettings
from notifier.lifecycle import BackgroundTasks, Service
from notifier.requests.waiters import utcnow
from notifier.sources.mqtt.bridge import ConnectionActivity, ThreadBridge
from notifier.sources.mqtt.connections import (
    ConnectionFactory,
    ConnectSpacing,
    MqttAuthError,
    MqttConnectError,
)
from notifier.sources.mqtt.rotation import TokenRotation, TokenSource, retire

log = logging.getLogger(__name__)


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
        connects: ConnectSpacing | None = None,
    ) -> None:
        self.settings = settings
        self.label = label
        """What its log lines start with."""
        self.endpoint = endpoint
        self.factory = ConnectionFactory(
            settings, endpoint, label=label, aws=aws, connects=connects
        )
        self.topic_filter = topic_filter
        self.connected = False
        self.subscribed_at: datetime | None = None
        """Since when the current subscription is verified (None while not connected)."""
        self._connected_changed = asyncio.Event()
        self.on_connected_changed: list[Callable[[], None]] = []
        """Called in the event loop each time ``connected`` changes."""
        self.received = 0
        self.ignored = 0
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
        self._rotation = (
            TokenRotation(tokens, timeout=settings.connect_timeout, refresh_margin=refresh_margin)
            if tokens is not None
            else None
        )
        self._token: IotToken | None = None
        self._bridge: ThreadBridge | None = None
        self._connection: mqtt.Connection | None = None
        self._tasks = BackgroundTasks()
        self._opening = asyncio.Lock()
        self._renewing = False
        """The current connection is distrusted: the keeper replaces it (:meth:`renew`)."""
        self._wake = asyncio.Event()
        """Wakes the keeper before its time."""
        self._activity: dict[mqtt.Connection, ConnectionActivity] = {}
        """Of each open connection."""

    @property
    def port(self) -> int:
        return self.factory.port

    def handle_message(self, topic: str, payload: bytes) -> None:
        """Called in the event loop for each message received."""
        raise NotImplementedError

    async def start(self) -> None:
        self._bridge = ThreadBridge(asyncio.get_running_loop())
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

    async def wait_connected(self, value: bool) -> None:
        """Return once ``connected`` is ``value``."""
        while self.connected is not value:
            await self._connected_changed.wait()

    async def _open(self) -> None:
        """Connect and subscribe a new connection (with a new token, if tokens are used), then
        make it the current one and retire the previous."""
        async with self._opening:
            token = await self._rotation.new_token() if self._rotation is not None else None
            connection = self._build(token, clean=self._renewing and token is None)
            try:
                await self.factory.connect(connection, with_token=token is not None)
                await self.factory.subscribe(connection, self.topic_filter, token is not None)
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
                activity = self._activity.pop(previous, ConnectionActivity())
                await retire(self.factory, previous, self.topic_filter, activity)
        log.info(
            "%s connected to %s:%s as %s, subscribed to %s%s", self.label,
            self.endpoint, self.port, self.client_id, self.topic_filter,
            f" (token valid until {token.expires_at.isoformat()})" if token else "",
        )  # fmt: skip

    def _set_connected(self, value: bool) -> None:
        if value is self.connected:
            return
        self.connected = value
        self.subscribed_at = utcnow() if value else None
        changed, self._connected_changed = self._connected_changed, asyncio.Event()
        changed.set()
        for listener in self.on_connected_changed:
            listener()

    async def _keep_connected_once(self) -> None:
        """One turn of the keeper: connect when there is no connection (the broker may be
        unreachable at start) or the current one is distrusted (:meth:`renew`); with tokens,
        connect anew with a fresh one shortly before the current one expires. Failures are
        retried with backoff by the loop around it."""
        if self._connection is not None and not self._renewing:
            rotation, token = self._rotation, self._token
            wait = rotation.refresh_in(token) if rotation and token else None
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass  # time to refresh the token
            self._wake.clear()
            if self._token is None and not self._renewing:
                return
        if self._renewing and self._rotation is None and self._connection is not None:
            # One client id: the new connection would take this one over. Close it first.
            async with self._opening:
                connection, self._connection = self._connection, None
            await self._close(connection)
        await self._open()

    def _auth_failed(self, exc: Exception) -> None:
        message = str(exc)
        self.auth_failures += 1
        if message != self.auth_error:
            # One line per distinct failure, not one per retry.
            what = "authentication" if isinstance(exc, MqttAuthError) else "reconnecting"
            log.error("%s %s failed, retrying: %s", self.label, what, message)
        self.auth_error = message

    def _build(self, token: IotToken | None, clean: bool) -> mqtt.Connection:
        """A new connection whose every message reaches :meth:`handle_message`."""
        assert self._bridge is not None, "not started"
        connection = self.factory.build(
            token.client_id if token is not None else self._own_client_id,
            token,
            clean=clean,
            on_interrupted=self._bridge.on_interrupted(self._handle_interrupted),
            on_resumed=self._bridge.on_resumed(self._handle_resumed),
        )
        self._activity[connection] = self._bridge.deliver_messages(connection, self.handle_message)
        return connection

    async def _close(self, connection: mqtt.Connection) -> None:
        self._activity.pop(connection, None)
        await self.factory.close(connection)

    # awscrt's events, in the event loop

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
                await self.factory.subscribe(connection, self.topic_filter, self._token is not None)
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
