"""DescribeExecution sweeps of the held transactions, for when MQTT cannot tell us.

With a connection to watch (``completion = "mqtt"``) it sweeps only while that connection is
down, and once more right after it is back and subscribed, since a completion published
during the gap is lost. While it is down, each held, unresolved transaction is described
again once it is due: ``interval`` seconds after it was last asked about while it is young,
backing off with its age (a quarter of it) up to ``max_interval`` for long-running ones. The
sweeps start as soon as the connection is known to be down. While MQTT is up it makes no
call (the safety net's rare checks aside, see :mod:`notifier.sources.safety`).
Without one (``completion = "poll"``) it sweeps every ``interval`` seconds, always.

Every call goes through the shared :class:`~notifier.sources.describe.Describer`, at most
``reconcile_rate`` calls a second together with every other DescribeExecution.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from notifier.lifecycle import BackgroundTasks, Service
from notifier.sources.describe import Describer
from notifier.waiters import Registry, Transaction, utcnow

log = logging.getLogger(__name__)

BATCH = 10
"""Calls in flight at once (each still waits for its turn at the rate limit)."""
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
    ) -> None:
        self.registry = registry
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
        resolved = 0
        while not connection.connected:
            due, wake_in = self._due()
            if due:
                resolved += await self._describe_all(due, stop_if_connected=True)
                continue
            try:
                await asyncio.wait_for(connection.wait_connected(True), wake_in)
            except TimeoutError:
                pass
        log.info("MQTT is back; the sweeps while it was down answered %d held requests", resolved)
        resolved = await self.sweep()
        log.info("MQTT is back: the sweep after it answered %d held requests", resolved)

    def _due(self) -> tuple[list[Transaction], float]:
        """The transactions due for a call now, longest unasked first; and, when none is,
        the seconds until the next one will be (at most ``interval``)."""
        now, wall = time.monotonic(), utcnow()
        due: list[Transaction] = []
        wake_in = self.interval
        for txn in self._pending():
            age = (wall - txn.started_at).total_seconds() if txn.started_at else 0.0
            spacing = min(self.max_interval, max(self.interval, age * AGE_SHARE))
            remaining = txn.asked_at + spacing - now
            if remaining <= 0:
                due.append(txn)
            else:
                wake_in = min(wake_in, remaining)
        due.sort(key=lambda txn: txn.asked_at)
        return due, wake_in

    def _pending(self) -> list[Transaction]:
        # In mqtt mode, re-attached executions of other instances are the DescribePoller's.
        return [
            txn for txn in self.registry.unresolved() if self.connection is None or not txn.poll
        ]

    async def sweep(self) -> int:
        """Describe every held, unresolved transaction once; returns how many it resolved."""
        return await self._describe_all(self._pending())

    async def _describe_all(
        self, transactions: Sequence[Transaction], *, stop_if_connected: bool = False
    ) -> int:
        self.sweeps += 1
        resolved = 0
        for first in range(0, len(transactions), BATCH):
            if stop_if_connected and self.connection is not None and self.connection.connected:
                break
            batch = transactions[first : first + BATCH]
            resolved += sum(await asyncio.gather(*(self._describe(txn) for txn in batch)))
        return resolved

    async def _describe(self, txn: Transaction) -> bool:
        if txn.completion is not None:
            return False
        self.calls += 1
        status = await self.describer.describe(txn)
        return status is not None and status.final and txn.completion is not None
