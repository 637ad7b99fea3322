"""DescribeExecution sweeps of the held transactions, for when MQTT cannot tell us.

With a connection to watch (``completion = "mqtt"``) it sweeps only while that connection is
down, and once more right after it is back and subscribed, since a completion published
during the gap is lost. While it is down, each held, unresolved transaction is described
again once it is due: ``interval`` seconds after it was last asked about while it is young,
backing off with its age (a quarter of it) up to ``max_interval`` for long-running ones. The
sweeps start as soon as the connection is known to be down, and a request is queued for
its turn at the rate limit as soon as it is due, so with many held each is described about
every ``held / rate`` seconds, however slow the calls. While MQTT is up it makes no
call (the safety net's rare checks aside, see :mod:`notifier.sources.safety_net_while_up`).
Without one (``completion = "poll"``) it sweeps every ``interval`` seconds, always. With a
pool of connections, "down" is any of them, and only the transactions whose completion
may have been published while their own connection was not subscribed are described
(``exposed``).

Every call goes through the shared :class:`~notifier.sources.describe.Describer`, at most
``reconcile_rate`` calls a second together with every other DescribeExecution.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Container
from typing import Protocol

from notifier.lifecycle import BackgroundTasks, Service
from notifier.requests.waiters import Registry, Transaction, utcnow
from notifier.sources.describe import Describer

log = logging.getLogger(__name__)

AGE_SHARE = 0.25
"""While MQTT is down, a running execution is described again after this share of its age."""


class Connection(Protocol):
    @property
    def connected(self) -> bool: ...

    async def wait_connected(self, value: bool) -> None: ...


class Reconciler(Service):
    def __init__(
        self,
        registry: Registry,
        describer: Describer,
        connection: Connection | None,
        *,
        interval: float,
        max_interval: float,
        exposed: Callable[[Transaction], bool] | None = None,
    ) -> None:
        """``exposed`` tells, with several connections, whether a transaction's completion
        may have been published while its own connection was not subscribed (default: every
        held transaction's may)."""
        self.registry = registry
        self.exposed = exposed
        self.describer = describer
        self.connection = connection
        self.interval = interval
        self.max_interval = max_interval
        self.calls = 0
        self.sweeps = 0
        self._tasks = BackgroundTasks()

    async def start(self) -> None:
        step = self._poll_once if self.connection is None else self._outage_once
        self._tasks.start("reconciler", step)

    async def stop(self) -> None:
        await self._tasks.stop()

    async def _poll_once(self) -> None:
        await asyncio.sleep(self.interval)
        await self.sweep()

    async def _outage_once(self) -> None:
        """Wait for the connection to go down, sweep while it is, and once after."""
        connection = self.connection
        assert connection is not None
        await connection.wait_connected(False)
        log.info("MQTT is down: sweeping held requests with DescribeExecution")
        unless = connection_is_up(connection)
        in_flight: dict[Transaction, asyncio.Task[bool]] = {}
        resolved = 0
        try:
            while not connection.connected:
                due, wake_in = self._due(exclude=in_flight)
                if due:
                    self.sweeps += 1
                for txn in due:
                    # Each waits for its turn at the rate limit; the next due ones are
                    # queued behind as soon as they are due, not after a whole pass.
                    in_flight[txn] = asyncio.ensure_future(self._describe(txn, unless))
                try:
                    # Not wait_for, which on Python 3.11 may lose the cancellation of a stop.
                    async with asyncio.timeout(wake_in):
                        await connection.wait_connected(True)
                except TimeoutError:
                    pass
                for txn, task in list(in_flight.items()):
                    if task.done():
                        del in_flight[txn]
                        resolved += _resolved(task)
        except asyncio.CancelledError:
            for task in in_flight.values():
                task.cancel()
            raise
        if in_flight:  # their turn comes now that MQTT is back: left to the sweep after
            await asyncio.wait(in_flight.values())
            resolved += sum(_resolved(task) for task in in_flight.values())
        log.info("MQTT is back; the sweeps while it was down answered %d held requests", resolved)
        resolved = await self.sweep()
        log.info("MQTT is back: the sweep after it answered %d held requests", resolved)

    def _due(self, exclude: Container[Transaction] = ()) -> tuple[list[Transaction], float]:
        """The transactions due for a call now (but those in ``exclude``), longest unasked
        first; and the seconds until the next one will be (at most ``interval``)."""
        now, wall = time.monotonic(), utcnow()
        due: list[Transaction] = []
        wake_in = self.interval
        for txn in self._pending():
            if txn in exclude:
                continue
            age = (wall - txn.started_at).total_seconds() if txn.started_at else 0.0
            spacing = min(self.max_interval, max(self.interval, age * AGE_SHARE))
            remaining = txn.quiet_since + spacing - now
            if remaining <= 0:
                due.append(txn)
            else:
                wake_in = min(wake_in, remaining)
        due.sort(key=lambda txn: txn.quiet_since)
        return due, wake_in

    def _pending(self) -> list[Transaction]:
        # In mqtt mode, re-attached executions of other instances are the DescribePoller's.
        if self.connection is None:
            return list(self.registry.unresolved())
        exposed = self.exposed
        return [
            txn
            for txn in self.registry.unresolved()
            if not txn.poll and (exposed is None or exposed(txn))
        ]

    async def sweep(self) -> int:
        """Describe every held, unresolved transaction once, each as soon as the rate limit
        lets it (how many are in flight together is up to the rate and AWS's latency);
        returns how many it resolved."""
        self.sweeps += 1
        results = await asyncio.gather(*(self._describe(txn) for txn in self._pending()))
        return sum(results)

    async def _describe(self, txn: Transaction, unless: Callable[[], bool] | None = None) -> bool:
        if txn.completion is not None:
            return False
        self.calls += 1
        status = await self.describer.describe(txn, unless=unless)
        return status is not None and status.final and txn.completion is not None


def _resolved(task: asyncio.Task[bool]) -> bool:
    """Whether a finished call resolved its transaction; a call that raised is logged."""
    if task.cancelled():
        return False
    if (error := task.exception()) is not None:
        log.error("a DescribeExecution of the sweeps failed", exc_info=error)
        return False
    return task.result()


def connection_is_up(connection: Connection) -> Callable[[], bool]:
    return lambda: connection.connected
