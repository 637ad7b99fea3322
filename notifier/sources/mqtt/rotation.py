"""Token rotation and the retirement of a replaced connection.

A connection cannot change its credentials: before its token expires a new connection is
opened with a fresh one and subscribed, and only then is the old one retired: unsubscribed,
given time to hand over what the broker had already sent it, and closed. Completions keep
arriving throughout (on both, for a moment; the registry keeps the first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from awscrt import mqtt

from notifier.aws.iot_tokens import IotToken, TokenError
from notifier.sources.mqtt.bridge import ConnectionActivity, outcome
from notifier.sources.mqtt.connections import ConnectionFactory, MqttAuthError

log = logging.getLogger(__name__)

TokenSource = Callable[[], Awaitable[IotToken]]

MIN_REFRESH_DELAY = 1.0
# A replaced connection is closed once it has received nothing for RETIRE_QUIET_SECS after its
# unsubscribe, or after RETIRE_MAX_SECS at the latest.
RETIRE_QUIET_SECS = 1.0
RETIRE_MAX_SECS = 10.0


class TokenRotation:
    """Fresh tokens from ``tokens``, and when the one in use is to be replaced:
    ``refresh_margin`` seconds before it expires."""

    def __init__(self, tokens: TokenSource, *, timeout: float, refresh_margin: float) -> None:
        self._tokens = tokens
        self._timeout = timeout
        self._refresh_margin = refresh_margin

    async def new_token(self) -> IotToken:
        """A fresh token; :class:`MqttAuthError` saying why there is none."""
        try:
            async with asyncio.timeout(self._timeout):
                return await self._tokens()
        except TimeoutError:
            raise MqttAuthError("no MQTT token: the token issuer did not answer in time") from None
        except TokenError as exc:
            raise MqttAuthError(f"no MQTT token: {exc}") from None

    def refresh_in(self, token: IotToken) -> float:
        """Seconds until a connection made with ``token`` is to be replaced."""
        remaining = (token.expires_at - datetime.now(UTC)).total_seconds()
        return max(MIN_REFRESH_DELAY, remaining - self._refresh_margin)


async def retire(
    factory: ConnectionFactory,
    connection: mqtt.Connection,
    topic_filter: str,
    activity: ConnectionActivity,
) -> None:
    """Unsubscribe first, so the broker keeps nothing queued for the old session; then take
    what it had already sent the old connection before closing it, since the new one was not
    yet subscribed when those were routed."""
    try:
        unsubscribe, _packet_id = connection.unsubscribe(topic_filter)
        async with asyncio.timeout(5):
            await outcome(unsubscribe)
    except Exception as exc:
        log.debug("%s unsubscribe of the old connection: %s", factory.label, exc)
    await quiet(activity)
    await factory.close(connection)


async def quiet(activity: ConnectionActivity) -> None:
    """Return once the connection of ``activity`` has received nothing for
    RETIRE_QUIET_SECS (at most RETIRE_MAX_SECS from now)."""
    loop = asyncio.get_running_loop()
    since = loop.time()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(RETIRE_MAX_SECS):
            while True:
                quiet_for = loop.time() - max(since, activity.last_message_at)
                if quiet_for >= RETIRE_QUIET_SECS:
                    return
                await asyncio.sleep(RETIRE_QUIET_SECS - quiet_for)
