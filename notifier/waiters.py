"""The registry of held requests: transaction id -> the requests waiting for its completion.

Completion sources call :meth:`Registry.resolve`; the first resolution of a transaction wins
and later ones are no-ops, whatever source they come from. A waiter is removed as soon as its
request stops waiting (answered, timed out or the client went away). Transactions nobody
waits for are kept, most recent first, up to ``max_recent``, so that a completion arriving
after a 202 still answers a later re-attach without an AWS call.
"""

from __future__ import annotations

import asyncio
import enum
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    """The daemon's one clock for every timestamp it reports."""
    return datetime.now(UTC)


class Status(enum.StrEnum):
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    ABORTED = "ABORTED"

    @property
    def final(self) -> bool:
        return self is not Status.RUNNING


@dataclass(frozen=True)
class Completion:
    """How an execution ended, as reported by one source."""

    status: Status
    via: str
    """The source: ``mqtt``, ``sqs`` (this instance's queue), ``poll`` (DescribeExecution)
    or ``stop`` (our StopExecution)."""
    notified_at: datetime = field(default_factory=utcnow)
    """When this daemon learnt of the completion."""
    execution_arn: str | None = None
    output: Any = None
    error: str | None = None
    cause: str | None = None
    stop_date: datetime | None = None
    """When the workflow finished, by AWS's clock: the notification's ``finishedAt`` or
    DescribeExecution's ``stopDate``."""


@dataclass(eq=False)
class Transaction:
    txn_id: str
    route: str
    execution_arn: str
    started_at: datetime | None = None
    """When this instance's StartExecution returned; None for executions started elsewhere."""
    poll: bool = False
    """Completions are not published to this instance: DescribeExecution must be polled."""
    completion: Completion | None = None
    waiters: set[asyncio.Future[Completion | None]] = field(default_factory=set)


class RegistryFullError(Exception):
    pass


class Registry:
    def __init__(
        self,
        max_held: int,
        max_recent: int = 10_000,
        on_resolved: Callable[[Transaction, Completion], None] | None = None,
    ) -> None:
        self.max_held = max_held
        self.max_recent = max_recent
        self.on_tracked: list[Callable[[Transaction], None]] = []
        """Called with each transaction newly registered."""
        self.on_resolved: list[Callable[[Transaction, Completion], None]] = []
        """Called with each transaction and the completion it resolved with."""
        if on_resolved is not None:
            self.on_resolved.append(on_resolved)
        self._transactions: dict[str, Transaction] = {}
        self._idle: OrderedDict[str, None] = OrderedDict()
        self._held = 0
        self._empty = asyncio.Event()
        self._empty.set()
        self._released = False

    @property
    def held(self) -> int:
        """Requests waiting right now."""
        return self._held

    def __len__(self) -> int:
        return len(self._transactions)

    def get(self, txn_id: str) -> Transaction | None:
        return self._transactions.get(txn_id)

    def track(self, txn: Transaction) -> Transaction:
        """Register ``txn`` (or return the one already registered under its id)."""
        existing = self._transactions.get(txn.txn_id)
        if existing is not None:
            return existing
        self._transactions[txn.txn_id] = txn
        self._evict(room=1)
        self._idle[txn.txn_id] = None
        for listener in self.on_tracked:
            listener(txn)
        return txn

    def discard(self, txn_id: str) -> None:
        """Forget a transaction whose execution never started. Its waiters get ``None``."""
        txn = self._transactions.pop(txn_id, None)
        self._idle.pop(txn_id, None)
        if txn is not None:
            for waiter in txn.waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def check_capacity(self) -> None:
        if self._held >= self.max_held:
            raise RegistryFullError(f"{self._held} requests are already held")

    @asynccontextmanager
    async def hold(self, txn_id: str) -> AsyncIterator[asyncio.Future[Completion | None]]:
        """A future for the completion of a tracked transaction, for the ``with`` block.

        The future gets the completion, or ``None`` when the daemon stops holding requests
        (shutdown) or the transaction is discarded. Leaving the block removes the waiter.
        """
        self.check_capacity()
        txn = self._transactions[txn_id]
        waiter: asyncio.Future[Completion | None] = asyncio.get_running_loop().create_future()
        if txn.completion is not None:
            waiter.set_result(txn.completion)
        elif self._released:
            waiter.set_result(None)
        txn.waiters.add(waiter)
        self._idle.pop(txn_id, None)
        self._held += 1
        self._empty.clear()
        try:
            yield waiter
        finally:
            self._held -= 1
            if self._held == 0:
                self._empty.set()
            txn.waiters.discard(waiter)
            waiter.cancel()
            if not txn.waiters and self._transactions.get(txn_id) is txn:
                self._idle[txn_id] = None
                self._evict()

    def resolve(self, txn_id: str, completion: Completion) -> bool:
        """Record the completion and wake its waiters; False if unknown or already resolved."""
        txn = self._transactions.get(txn_id)
        if txn is None or txn.completion is not None:
            return False
        txn.completion = completion
        for waiter in txn.waiters:
            if not waiter.done():
                waiter.set_result(completion)
        for listener in self.on_resolved:
            listener(txn, completion)
        return True

    def release_all(self) -> int:
        """Stop holding: every waiting request, and any later one, gets ``None`` at once.

        Returns how many waiting requests were released.
        """
        self._released = True
        released = 0
        for txn in self._transactions.values():
            for waiter in txn.waiters:
                if not waiter.done():
                    waiter.set_result(None)
                    released += 1
        return released

    async def wait_empty(self) -> None:
        """Return once no request is held."""
        await self._empty.wait()

    def unresolved(self) -> Iterator[Transaction]:
        """Unresolved transactions that someone waits for."""
        for txn in list(self._transactions.values()):
            if txn.waiters and txn.completion is None:
                yield txn

    def polled(self) -> Iterator[Transaction]:
        """Unresolved transactions that someone waits for and that must be polled."""
        for txn in list(self._transactions.values()):
            if txn.poll and txn.waiters and txn.completion is None:
                yield txn

    def _evict(self, room: int = 0) -> None:
        while self._idle and len(self._idle) > self.max_recent - room:
            txn_id, _ = self._idle.popitem(last=False)
            del self._transactions[txn_id]
