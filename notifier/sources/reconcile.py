"""DescribeExecution sweeps of the held transactions, for when MQTT cannot tell us.

With a connection to watch (``completion = "mqtt"``) it sweeps only while that connection is
down, at an interval that starts at ``interval`` and doubles, up to ``max_interval``, while
sweeps find nothing new; and once more right after the connection is back and subscribed,
since a completion published during the gap is lost. While MQTT is up it makes no call.
Without one (``completion = "poll"``) it sweeps every ``interval`` seconds, always.

A sweep describes each held, unresolved transaction once, at most ``rate`` calls a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from notifier.executions import AwsError, Executions, completion_from_description
from notifier.lifecycle import Service
from notifier.waiters import Registry, Status, Transaction

log = logging.getLogger(__name__)

BATCH = 10


class Connection(Protocol):
    connected: bool

    async def wait_connected(self, value: bool) -> None: ...


class Reconciler(Service):
    def __init__(
        self,
        registry: Registry,
        executions: Executions,
        connection: Connection | None,
        *,
        interval: float,
        max_interval: float,
        rate: float,
    ) -> None:
        self.registry = registry
        self.executions = executions
        self.connection = connection
        self.interval = interval
        self.max_interval = max_interval
        self.rate = rate
        self.calls = 0
        self.sweeps = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="reconciler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        if self.connection is None:
            while True:
                await asyncio.sleep(self.interval)
                await self._sweep_safely()
        while True:
            await self.connection.wait_connected(False)
            log.info("MQTT is down: sweeping held requests with DescribeExecution")
            await self._while_down(self.connection)
            resolved = await self._sweep_safely()
            log.info("MQTT is back: the sweep after it answered %d held requests", resolved)

    async def _while_down(self, connection: Connection) -> None:
        interval = self.interval
        while not connection.connected:
            try:
                # Not wait_for, which on Python 3.11 may lose the cancellation of a stop.
                async with asyncio.timeout(interval):
                    await connection.wait_connected(True)
                return
            except TimeoutError:
                pass
            resolved = await self._sweep_safely()
            interval = self.interval if resolved else min(interval * 2, self.max_interval)

    async def _sweep_safely(self) -> int:
        try:
            return await self.sweep()
        except Exception:  # never let the loop die
            log.exception("reconciliation sweep failed")
            return 0

    async def sweep(self) -> int:
        """Describe every held, unresolved transaction once; returns how many it resolved."""
        self.sweeps += 1
        # In mqtt mode, re-attached executions of other instances are the DescribePoller's.
        pending = [
            txn for txn in self.registry.unresolved() if self.connection is None or not txn.poll
        ]
        resolved = 0
        for first in range(0, len(pending), BATCH):
            began = time.monotonic()
            batch = pending[first : first + BATCH]
            results = await asyncio.gather(*(self._describe(txn) for txn in batch))
            resolved += sum(results)
            pause = len(batch) / self.rate - (time.monotonic() - began)
            if pause > 0 and first + BATCH < len(pending):
                await asyncio.sleep(pause)
        return resolved

    async def _describe(self, txn: Transaction) -> bool:
        if txn.completion is not None:
            return False
        self.calls += 1
        try:
            description = await self.executions.describe(txn.execution_arn)
        except AwsError as exc:
            if exc.code != "ExecutionDoesNotExist":  # still being started
                log.warning(
                    "DescribeExecution failed: %s",
                    exc,
                    extra={"txnId": txn.txn_id, "executionArn": txn.execution_arn},
                )
            return False
        if not Status(description["status"]).final:
            return False
        return self.registry.resolve(txn.txn_id, completion_from_description(description))
