"""Asking Step Functions how an execution is doing: DescribeExecution, within the budget.

:class:`Describer` is the one place a held transaction's execution is described: every path
that asks (the sweeps while MQTT is down, the safety net while it is up, re-attaches, the
poller below) draws on the instance's share of the account's reads
(:mod:`notifier.aws.read_budget`), in turn by how soon the transaction's held requests are due
an answer. An execution found ended resolves its transaction (``via="poll"``); a status
this daemon does not know is logged once and treated as still running. A call that was
throttled, or found no turn, is no answer: the request waits on for MQTT, the queue or
the next sweep.

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

from notifier.aws.errors import RATE_LIMITED, AwsError
from notifier.lifecycle import BackgroundTasks, Service
from notifier.requests.descriptions import completion_from_description
from notifier.requests.waiters import Registry, Status, Transaction

log = logging.getLogger(__name__)


class DescribesExecutions(Protocol):
    """DescribeExecution within the read budget
    (:class:`~notifier.requests.executions.Executions`); raises AwsError."""

    async def describe(
        self,
        arn: str,
        *,
        deadline: float = ...,
        patience: float | None = None,
        unless: Callable[[], bool] | None = None,
    ) -> dict[str, Any]: ...


class Describer:
    def __init__(self, registry: Registry, executions: DescribesExecutions) -> None:
        self.registry = registry
        self.executions = executions
        self.calls = 0
        self._unknown_statuses: set[str] = set()

    async def describe(
        self,
        txn: Transaction,
        patience: float | None = None,
        *,
        unless: Callable[[], bool] | None = None,
        deadline: float | None = None,
        via: str = "poll",
    ) -> Status | None:
        """DescribeExecution of ``txn``'s execution, resolving it if it ended (as a
        completion that came ``via`` that path); its status.

        Its turn comes by ``deadline`` (None: that of the transaction's held requests; see
        :mod:`notifier.aws.read_budget`). None when no
        answer came: the call failed or was throttled, the execution does not exist (yet),
        no call could be made within ``patience`` seconds (None: as long as it takes), or
        the transaction was resolved or ``unless()`` was true when its turn came (no call
        is spent).
        """

        if txn.express:
            # Express executions cannot be described: nothing to ask. Taken as a look, so
            # that the sweeps back off from it as from any other.
            txn.asked_at = time.monotonic()
            return None

        def needless() -> bool:
            return txn.completion is not None or (unless is not None and unless())

        about = {"txnId": txn.txn_id, "executionArn": txn.execution_arn}
        try:
            description = await self.executions.describe(
                txn.execution_arn,
                deadline=txn.deadline if deadline is None else deadline,
                patience=patience,
                unless=needless,
            )
        except AwsError as exc:
            if exc.code == RATE_LIMITED:  # no call made
                return None
            self.calls += 1
            txn.asked_at = time.monotonic()
            if exc.throttled:
                log.info("DescribeExecution: %s", exc, extra=about)
            elif exc.code != "ExecutionDoesNotExist":  # still being started
                log.warning("DescribeExecution failed: %s", exc, extra=about)
            return None
        self.calls += 1
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
