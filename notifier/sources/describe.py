"""Asking Step Functions how an execution is doing: DescribeExecution, rate-limited.

:class:`Describer` is the one place a held transaction's execution is described: every path
that asks (the sweeps while MQTT is down, the safety net while it is up, re-attaches, the
poller below) shares its :class:`~notifier.aws.ratelimit.RateLimiter`, so together they never
exceed ``reconcile_rate`` calls a second. An execution found ended resolves its transaction
(``via="poll"``); a status this daemon does not know is logged once and treated as still
running.

:class:`DescribePoller` is for held requests whose completions MQTT will not bring: a
request re-attached here (``GET /executions/<txnId>``) for an execution started by another
instance waits for a completion published to that instance's subtopic. For those
transactions alone, it describes each every ``interval`` seconds while someone waits.
Executions started by this instance are never polled by it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from notifier.aws.errors import AwsError
from notifier.aws.ratelimit import RateLimiter
from notifier.lifecycle import BackgroundTasks, Service
from notifier.requests.executions import completion_from_description
from notifier.requests.waiters import Registry, Status, Transaction

log = logging.getLogger(__name__)


class DescribesExecutions(Protocol):
    """DescribeExecution (:class:`~notifier.requests.executions.Executions`); raises AwsError."""

    async def describe(self, arn: str) -> dict[str, Any]: ...


class Describer:
    def __init__(
        self, registry: Registry, executions: DescribesExecutions, limiter: RateLimiter
    ) -> None:
        self.registry = registry
        self.executions = executions
        self.limiter = limiter
        self.calls = 0
        self._unknown_statuses: set[str] = set()

    async def describe(
        self,
        txn: Transaction,
        patience: float | None = None,
        *,
        unless: Callable[[], bool] | None = None,
        via: str = "poll",
    ) -> Status | None:
        """DescribeExecution of ``txn``'s execution, resolving it if it ended (as a
        completion that came ``via`` that path); its status.

        None when no answer came: the call failed, the execution does not exist (yet), no
        call could be made within ``patience`` seconds (None: as long as it takes), or,
        without ``patience``, ``unless()`` was true when its turn came (no call is spent);
        also when it was resolved meanwhile.
        """

        if txn.express:
            # Express executions cannot be described: nothing to ask. Taken as a look, so
            # that the sweeps back off from it as from any other.
            txn.asked_at = time.monotonic()
            return None

        def needless() -> bool:
            return txn.completion is not None or (unless is not None and unless())

        if patience is not None:
            if not await self.limiter.try_acquire(patience):
                return None
        elif not await self.limiter.acquire(needless):
            return None
        if txn.completion is not None:
            return None
        self.calls += 1
        about = {"txnId": txn.txn_id, "executionArn": txn.execution_arn}
        try:
            description = await self.executions.describe(txn.execution_arn)
        except AwsError as exc:
            if exc.code != "ExecutionDoesNotExist":  # still being started
                log.warning("DescribeExecution failed: %s", exc, extra=about)
            return None
        finally:
            txn.asked_at = time.monotonic()
        raw = description.get("status")
        status = Status.parse(raw)
        txn.pending_redrive = status is Status.PENDING_REDRIVE
        if status is Status.UNKNOWN and str(raw) not in self._unknown_statuses:
            self._unknown_statuses.add(str(raw))
            log.warning("execution status %r is unknown here: taken as still running", raw)
        if status.final:
            self.registry.resolve(txn.txn_id, completion_from_description(description, via))
        return status


class DescribePoller(Service):
    def __init__(self, registry: Registry, describer: Describer, interval: float) -> None:
        self.registry = registry
        self.describer = describer
        self.interval = interval
        self.calls = 0
        self._tasks = BackgroundTasks()

    async def start(self) -> None:
        self._tasks.start("describe-poller", self._poll_once)

    async def stop(self) -> None:
        await self._tasks.stop()

    async def _poll_once(self) -> None:
        await asyncio.sleep(self.interval)
        transactions = list(self.registry.polled())
        self.calls += len(transactions)
        if transactions:
            await asyncio.gather(*(self.describer.describe(txn) for txn in transactions))
