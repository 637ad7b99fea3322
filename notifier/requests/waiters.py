"""The registry of held requests: transaction id -> the requests waiting for its completion.

Completion sources call :meth:`Registry.resolve`. A completion counts only if its execution
ARN is the one this daemon started (or re-attached to) for the transaction: anything else
is rejected, logged with both ARNs and reported to ``on_rejected``, whatever path brought it.
The first authentic resolution of a transaction wins and later ones are no-ops, whatever
source they come from. A waiter is removed as soon as its request stops waiting (answered,
timed out or the client went away). Transactions nobody waits for are kept, most recent
first, up to ``max_recent`` of them and ``max_recent_bytes`` of results, so that a
completion arriving after a 202 still answers a later re-attach without an AWS call.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    """The daemon's one clock for every timestamp it reports."""
    return datetime.now(UTC)


class Status(enum.StrEnum):
    """An execution's status. Read every status from outside with :meth:`parse`."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    ABORTED = "ABORTED"
    PENDING_REDRIVE = "PENDING_REDRIVE"
    """A redriven execution about to run again (DescribeExecution)."""
    UNKNOWN = "UNKNOWN"
    """Any status this daemon does not know."""

    @classmethod
    def parse(cls, value: object) -> Status:
        """The status named ``value``; ``UNKNOWN`` for anything else. Never raises."""
        try:
            return cls(value) if isinstance(value, str) else cls.UNKNOWN
        except ValueError:
            return cls.UNKNOWN

    @property
    def final(self) -> bool:
        """The execution has ended. Only the four final statuses are; unknown ones are not."""
        return self in _FINAL


_FINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT, Status.ABORTED})


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
    size: int = 0
    """Bytes of the message it came in (what a kept result is counted as)."""
    fetch_output: bool = False
    """A pointer: the execution succeeded with an output too large for the message, which
    must be fetched (DescribeExecution) before this completes anything."""


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
    heard_via: set[str] = field(default_factory=set)
    """Every source that delivered an authentic completion, the first and the duplicates."""
    tracked_at: float = field(default_factory=time.monotonic)
    """When this instance began to track it (monotonic)."""
    asked_at: float | None = None
    """When Step Functions was last asked about it (monotonic); None: never."""
    fingerprint: str | None = None
    """For a keyed transaction: the fingerprint of the request body it was started with,
    once this instance knows it."""
    owner: str | None = None
    """The name of the API key that started it; None with keys off or not known."""
    sync_call: bool = False
    """A StartSyncExecution for it is in flight: its answer is the one to give, and other
    sources' completions wait in ``held_back`` until it fails."""
    held_back: Completion | None = None
    pending_redrive: bool = False
    """Step Functions last said ``PENDING_REDRIVE``: redriven, not running yet."""
    ended_before: datetime | None = None
    """Redriven after it ended at this time: a completion that stopped by then is the
    earlier run's, not the end of this one."""
    express: bool = False
    """Its state machine is EXPRESS: until a completion names the execution,
    ``execution_arn`` is the ``...:express:<machine>:<txn id>`` its ARN begins with (AWS
    adds an id of its own), and Step Functions cannot be asked about it."""
    deadlines: dict[asyncio.Future[Completion | None], float] = field(default_factory=dict)
    """When each held request that stated one will be answered anyway (monotonic)."""

    @property
    def deadline(self) -> float:
        """The soonest any of its held requests will be answered anyway (monotonic); infinite
        while none is held."""
        return min(self.deadlines.values(), default=math.inf)

    def is_its_execution(self, arn: str | None) -> bool:
        """Whether ``arn`` is the execution started for this transaction."""
        if arn is None:
            return False
        return arn == self.execution_arn or (
            self.express and arn.startswith(f"{self.execution_arn}:") and arn.count(":") == 8
        )

    @property
    def quiet_since(self) -> float:
        """Since when nothing was heard of it: its last DescribeExecution, or its tracking."""
        return self.asked_at if self.asked_at is not None else self.tracked_at


class Rejection(enum.StrEnum):
    """Why a completion was not believed."""

    NO_EXECUTION_ARN = "no_execution_arn"
    OTHER_EXECUTION = "other_execution"


class RegistryFullError(Exception):
    pass


class Registry:
    def __init__(
        self,
        max_held: int,
        max_recent: int = 10_000,
        on_resolved: Callable[[Transaction, Completion], None] | None = None,
        *,
        max_recent_bytes: int = 64 * 1024 * 1024,
        max_reattach_held: int | None = None,
    ) -> None:
        """``max_held`` bounds the requests that started their transaction,
        ``max_reattach_held`` (default: the same) those re-attached to one: each has its own
        budget, so that re-attaches cannot crowd out new work."""
        self.max_held = max_held
        self.max_reattach_held = max_reattach_held if max_reattach_held is not None else max_held
        self.max_recent = max_recent
        self.max_recent_bytes = max_recent_bytes
        self.on_tracked: list[Callable[[Transaction], None]] = []
        """Called with each transaction newly registered."""
        self.on_resolved: list[Callable[[Transaction, Completion], None]] = []
        """Called with each transaction and the completion it resolved with."""
        if on_resolved is not None:
            self.on_resolved.append(on_resolved)
        self.on_delivered: list[Callable[[Transaction, Completion, bool], None]] = []
        """Called with every authentic completion of a known transaction, and whether it was
        the first (a resolution) or a duplicate."""
        self.on_rejected: list[Callable[[Transaction, Completion, Rejection], None]] = []
        """Called with every completion refused for not being the transaction's execution's."""
        self.on_pointer: list[Callable[[Transaction, Completion], None]] = []
        """Called with every authentic pointer (``fetch_output``) to an unresolved
        transaction: what fetches the output and resolves it."""
        self.on_forgotten: list[Callable[[str], None]] = []
        """Called with the id of each transaction no longer kept (evicted or discarded)."""
        self._transactions: dict[str, Transaction] = {}
        self._idle: OrderedDict[str, None] = OrderedDict()
        self._idle_bytes = 0
        self._held = 0
        self._held_reattached = 0
        self._empty = asyncio.Event()
        self._empty.set()
        self._released = False

    @property
    def held(self) -> int:
        """Requests waiting right now."""
        return self._held

    @property
    def held_reattached(self) -> int:
        """Of them, those re-attached to a transaction."""
        return self._held_reattached

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
        self._make_idle(txn)
        for listener in self.on_tracked:
            listener(txn)
        return txn

    def discard(self, txn_id: str) -> None:
        """Forget a transaction whose execution never started. Its waiters get ``None``."""
        txn = self._transactions.pop(txn_id, None)
        if txn is not None:
            self._make_busy(txn)
            for waiter in txn.waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._forgotten(txn_id)

    def check_capacity(self, *, reattach: bool = False) -> None:
        if reattach:
            if self._held_reattached >= self.max_reattach_held:
                raise RegistryFullError(f"{self._held_reattached} re-attached requests are held")
        elif self._held - self._held_reattached >= self.max_held:
            raise RegistryFullError(f"{self._held - self._held_reattached} requests are held")

    @asynccontextmanager
    async def hold(
        self, txn_id: str, *, reattach: bool = False, deadline: float | None = None
    ) -> AsyncIterator[asyncio.Future[Completion | None]]:
        """A future for the completion of a tracked transaction, for the ``with`` block;
        ``reattach`` counts the request against the re-attach budget, ``deadline`` is when
        the request will be answered anyway (monotonic; see :attr:`Transaction.deadline`).

        The future gets the completion, or ``None`` when the daemon stops holding requests
        (shutdown) or the transaction is discarded. Leaving the block removes the waiter.
        """
        self.check_capacity(reattach=reattach)
        txn = self._transactions[txn_id]
        waiter: asyncio.Future[Completion | None] = asyncio.get_running_loop().create_future()
        if txn.completion is not None:
            waiter.set_result(txn.completion)
        elif self._released:
            waiter.set_result(None)
        txn.waiters.add(waiter)
        if deadline is not None:
            txn.deadlines[waiter] = deadline
        self._make_busy(txn)
        self._held += 1
        self._held_reattached += reattach
        self._empty.clear()
        try:
            yield waiter
        finally:
            self._held -= 1
            self._held_reattached -= reattach
            if self._held == 0:
                self._empty.set()
            txn.waiters.discard(waiter)
            txn.deadlines.pop(waiter, None)
            waiter.cancel()
            if not txn.waiters and self._transactions.get(txn_id) is txn:
                self._make_idle(txn)
                self._evict()

    def resolve(self, txn_id: str, completion: Completion) -> bool:
        """Record the completion and wake its waiters; a pointer (``fetch_output``) is
        handed to ``on_pointer`` instead, which resolves the transaction once it has the
        output.

        False if the transaction is unknown, already resolved, or ``completion`` is not
        about the execution started for it (then it is rejected: logged and reported).
        """
        txn = self._transactions.get(txn_id)
        if txn is None:
            return False
        if not txn.is_its_execution(completion.execution_arn):
            self._reject(txn, completion)
            return False
        if _of_an_earlier_run(txn, completion):
            log.info(
                "ignoring a %s completion via %s: it ended before the execution was redriven",
                completion.status, completion.via,
                extra={"txnId": txn.txn_id, "executionArn": txn.execution_arn},
            )  # fmt: skip
            return False
        assert completion.execution_arn is not None  # it is the transaction's
        txn.execution_arn = completion.execution_arn  # an Express one's, now known in full
        if txn.sync_call and completion.via != "sync" and txn.completion is None:
            txn.held_back = txn.held_back or completion
            txn.heard_via.add(completion.via)
            return False
        if completion.fetch_output:
            txn.heard_via.add(completion.via)
            if txn.completion is not None:
                return False
            for pointed in self.on_pointer:
                pointed(txn, completion)
            return True
        first = txn.completion is None
        txn.heard_via.add(completion.via)
        if first:
            txn.completion = completion
            txn.pending_redrive = False
            if txn.txn_id in self._idle:
                self._idle_bytes += completion.size
            for waiter in txn.waiters:
                if not waiter.done():
                    waiter.set_result(completion)
            for listener in self.on_resolved:
                listener(txn, completion)
        for delivered in self.on_delivered:
            delivered(txn, completion, first)
        if first:
            self._evict()
        return first

    def reopen(self, txn_id: str) -> None:
        """The transaction's execution was redriven: forget how it ended, so that whoever
        holds or re-attaches to it waits for its new end."""
        txn = self._transactions[txn_id]
        if txn.completion is None:
            return
        if txn.txn_id in self._idle:
            self._idle_bytes -= txn.completion.size
        txn.ended_before = txn.completion.stop_date or txn.completion.notified_at
        txn.completion = None
        txn.heard_via.clear()

    def _reject(self, txn: Transaction, completion: Completion) -> None:
        reason = Rejection.NO_EXECUTION_ARN
        if completion.execution_arn is not None:
            reason = Rejection.OTHER_EXECUTION
        log.warning(
            "ignoring a %s completion via %s: it is about execution %s, not %s, the one "
            "started for this transaction",
            completion.status, completion.via, completion.execution_arn, txn.execution_arn,
            extra={"txnId": txn.txn_id, "executionArn": txn.execution_arn},
        )  # fmt: skip
        for rejected in self.on_rejected:
            rejected(txn, completion, reason)

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

    def stale(self, age: float) -> Iterator[Transaction]:
        """Unresolved transactions someone waits for, that Step Functions was last asked
        about (or that were tracked) at least ``age`` seconds ago."""
        before = time.monotonic() - age
        for txn in self.unresolved():
            if txn.quiet_since <= before:
                yield txn

    @property
    def recent_bytes(self) -> int:
        """Bytes of the results kept for transactions nobody waits for."""
        return self._idle_bytes

    def _make_idle(self, txn: Transaction) -> None:
        if txn.txn_id not in self._idle:
            self._idle[txn.txn_id] = None
            self._idle_bytes += _kept_bytes(txn)

    def _make_busy(self, txn: Transaction) -> None:
        if txn.txn_id in self._idle:
            del self._idle[txn.txn_id]
            self._idle_bytes -= _kept_bytes(txn)

    def _evict(self, room: int = 0) -> None:
        while self._idle and (
            len(self._idle) > self.max_recent - room or self._idle_bytes > self.max_recent_bytes
        ):
            txn_id, _ = self._idle.popitem(last=False)
            self._idle_bytes -= _kept_bytes(self._transactions.pop(txn_id))
            self._forgotten(txn_id)

    def _forgotten(self, txn_id: str) -> None:
        for forgotten in self.on_forgotten:
            forgotten(txn_id)


def _of_an_earlier_run(txn: Transaction, completion: Completion) -> bool:
    ended = completion.stop_date
    return txn.ended_before is not None and ended is not None and ended <= txn.ended_before


def _kept_bytes(txn: Transaction) -> int:
    return txn.completion.size if txn.completion is not None else 0
