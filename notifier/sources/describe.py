"""DescribeExecution polling, only for held requests whose completions MQTT will not bring.

A request re-attached here (``GET /executions/<txnId>``) for an execution started by another
instance waits for a completion published to that instance's subtopic. For those
transactions alone, this source calls DescribeExecution every ``interval`` seconds while
someone waits. Executions started by this instance are never polled.
"""

from __future__ import annotations

import asyncio
import logging

from notifier.executions import AwsError, Executions, completion_from_description
from notifier.lifecycle import Service
from notifier.waiters import Registry, Status, Transaction

log = logging.getLogger(__name__)


class DescribePoller(Service):
    def __init__(self, registry: Registry, executions: Executions, interval: float) -> None:
        self.registry = registry
        self.executions = executions
        self.interval = interval
        self.calls = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="describe-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            transactions = list(self.registry.polled())
            if transactions:
                await asyncio.gather(*(self._poll(txn) for txn in transactions))

    async def _poll(self, txn: Transaction) -> None:
        self.calls += 1
        try:
            description = await self.executions.describe(txn.execution_arn)
        except AwsError as exc:
            log.warning(
                "DescribeExecution failed: %s",
                exc,
                extra={"txnId": txn.txn_id, "executionArn": txn.execution_arn},
            )
            return
        if Status(description["status"]).final:
            self.registry.resolve(txn.txn_id, completion_from_description(description))
