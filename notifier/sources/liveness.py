"""Whether MQTT really delivers: noticed from the completions the other paths bring.

A connection can look healthy and deliver nothing (a broker that lost the subscription of a
resumed session, a link that drops messages one way). The daemon notices it the only way
it can without publishing itself: when a completion of an execution *it* started reaches it
by its queue or a DescribeExecution sweep, MQTT should deliver the same one. If, ``grace``
seconds later, MQTT has not, although it was connected and subscribed from before the
workflow ended until then, that completion is counted as missed, ``/readyz`` reports
``degraded`` with the reason, and the connection is replaced by one on a fresh session.

Only completions MQTT must have carried count: one from the queue (each one the queue gets
was also published over MQTT, by the workflow or by the status forwarder), or one found by
DescribeExecution whose execution's history shows it published to this instance's topic (a
workflow that never publishes is no sign of a broken connection). Nothing is asked of AWS
while MQTT delivers.

The reason clears once MQTT delivers a completion on a connection made after the miss, or
``forget_after`` seconds after the last miss. With several connections, each completion is
checked against the connection its execution was given (``connection_of``), and only that
one is renewed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from notifier.aws.errors import AwsError
from notifier.aws.ratelimit import RateLimiter
from notifier.lifecycle import BackgroundTasks, Service
from notifier.requests.executions import Executions
from notifier.requests.waiters import Completion, Registry, Transaction, utcnow
from notifier.topics import completion_topic

log = logging.getLogger(__name__)

GRACE = 5.0
"""Seconds MQTT has to deliver a completion after another path brought it."""
FORGET_AFTER = 300.0
RENEW_AT_MOST_EVERY = 10.0
"""Seconds between two connections on a fresh session, however many misses there are."""

Published = Callable[[Transaction], Awaitable[bool]]
"""Whether the workflow of a transaction published its completion to this instance's
topic (from the execution's history)."""


class Watched(Protocol):
    """What is watched: the MQTT completion source."""

    @property
    def connected(self) -> bool: ...

    @property
    def subscribed_at(self) -> datetime | None: ...

    def renew(self) -> None: ...


@dataclass(frozen=True)
class _Check:
    txn: Transaction
    completion: Completion
    due: float


class MqttLiveness(Service):
    def __init__(
        self,
        registry: Registry,
        mqtt: Watched,
        published: Published,
        limiter: RateLimiter,
        *,
        connection_of: Callable[[Transaction], Watched | None] | None = None,
        on_missed: Callable[[], None] | None = None,
        grace: float = GRACE,
        forget_after: float = FORGET_AFTER,
    ) -> None:
        """``connection_of`` gives the connection a transaction's completion is published
        to (None: none is open any more); by default ``mqtt``."""
        self.mqtt = mqtt
        self.connection_of = connection_of or (lambda txn: mqtt)
        self.published = published
        self.limiter = limiter
        self.on_missed = on_missed
        self.grace = grace
        self.forget_after = forget_after
        self.checked = 0
        """Completions from the other paths checked against what MQTT delivered."""
        self.missed = 0
        self.problem: str | None = None
        """Why MQTT is not trusted right now; None while it delivers."""
        self._missed_at: datetime | None = None
        self._renewed_at: dict[int, float] = {}
        """When each connection (by id) was last renewed (monotonic)."""
        self._checks: asyncio.Queue[_Check] = asyncio.Queue()
        self._tasks = BackgroundTasks()
        registry.on_delivered.append(self._delivered)

    async def start(self) -> None:
        self._tasks.start("mqtt-liveness", self._check_next)

    async def stop(self) -> None:
        await self._tasks.stop()

    def _delivered(self, txn: Transaction, completion: Completion, first: bool) -> None:
        connection = self.connection_of(txn)
        if connection is None:
            return
        if completion.via == "mqtt":
            self._mqtt_delivered(connection)
        elif (
            first
            and completion.via in ("sqs", "poll")
            and txn.started_at is not None  # started here: published to this instance
            and not txn.poll
            and connection.connected
        ):
            self._checks.put_nowait(_Check(txn, completion, time.monotonic() + self.grace))

    def _mqtt_delivered(self, connection: Watched) -> None:
        subscribed_at = connection.subscribed_at
        if self.problem is None or self._missed_at is None or subscribed_at is None:
            return
        if subscribed_at > self._missed_at:
            log.info("MQTT delivers again")
            self.problem = None

    async def _check_next(self) -> None:
        try:
            async with asyncio.timeout(self.forget_after):
                check = await self._checks.get()
        except TimeoutError:
            check = None
        if check is not None:
            await asyncio.sleep(max(0.0, check.due - time.monotonic()))
            missed = await self._missed(check)
            self.checked += 1
            if missed:
                self._report(check)
                return
        missed_at = self._missed_at
        if self.problem is not None and missed_at is not None:
            if (utcnow() - missed_at).total_seconds() >= self.forget_after:
                log.info("no completion missed by MQTT for %.0f s", self.forget_after)
                self.problem = None

    async def _missed(self, check: _Check) -> bool:
        """MQTT was connected from before the workflow ended until now and did not deliver
        a completion it must have carried."""
        txn, completion = check.txn, check.completion
        connection = self.connection_of(txn)
        if "mqtt" in txn.heard_via or connection is None or not connection.connected:
            return False
        ended = completion.stop_date or completion.notified_at
        subscribed_at = connection.subscribed_at
        if subscribed_at is None or subscribed_at > _aware(ended):
            return False
        if completion.via == "sqs":
            return True
        await self.limiter.acquire()
        try:
            return await self.published(txn)
        except AwsError as exc:
            log.warning(
                "could not read the execution's history: %s", exc,
                extra={"txnId": txn.txn_id, "executionArn": txn.execution_arn},
            )  # fmt: skip
            return False

    def _report(self, check: _Check) -> None:
        self.missed += 1
        if self.on_missed is not None:
            self.on_missed()
        self._missed_at = utcnow()
        self.problem = (
            f"MQTT was connected but did not deliver the completion of {check.txn.txn_id} "
            f"within {self.grace:g} s of it arriving via {check.completion.via}"
        )
        about = {"txnId": check.txn.txn_id, "executionArn": check.txn.execution_arn}
        connection = self.connection_of(check.txn)
        if connection is None:
            return
        renewed_at = self._renewed_at.get(id(connection), -RENEW_AT_MOST_EVERY)
        if time.monotonic() - renewed_at < RENEW_AT_MOST_EVERY:
            log.debug("%s (reconnecting already)", self.problem, extra=about)
            return
        log.warning("%s: reconnecting on a fresh session", self.problem, extra=about)
        self._renewed_at[id(connection)] = time.monotonic()
        connection.renew()


def published_to(
    executions: Executions, topic_root: str, subtopic_of: Callable[[Transaction], str]
) -> Published:
    """:data:`Published` for this instance's completion topics (``subtopic_of`` names the
    subtopic a transaction's execution was started with)."""

    async def published(txn: Transaction) -> bool:
        topic = completion_topic(topic_root, subtopic_of(txn), txn.txn_id)
        return await executions.published(txn.execution_arn, topic)

    return published


def _aware(moment: datetime) -> datetime:
    """``moment`` in UTC if it says no zone (as moto's dates may not)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=utcnow().tzinfo)
