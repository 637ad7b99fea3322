"""This process's share of Step Functions' account-wide read quotas, spent by urgency.

Step Functions throttles DescribeExecution, GetExecutionHistory and ListExecutions with token
buckets per account and region, shared by every process of every instance. All of the
daemon's reads of them draw on one :class:`ReadBudget`: a token bucket refilled at
``[daemon] sfn_read_rate`` (divided among the instance's worker processes), counted in
DescribeExecution calls. A call of another API costs what it costs of its own account-wide
bucket, relative to DescribeExecution's, in the smallest regions (:data:`READ_COSTS`).

Turns are taken in the order the calls are due. A call for a held request states the
request's deadline (when it will be answered anyway) and is due when it is queued, or
:data:`LEAD` seconds before that deadline if that is sooner: calls queue in the order they
come, and one whose request is close to its deadline goes ahead of them. Calls of
background sweeps state no deadline and go after every call that has one. A caller may give
up after a ``patience``, or when its turn comes and ``unless()`` says the call is no longer
needed.

When Step Functions answers ``ThrottlingException`` all the same (other processes share the
account), the budget stops handing out turns for a random time between zero and an
exponentially growing cap ("full jitter"), which resets once a call gets through.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from notifier.token_bucket import TokenBucket

BACKGROUND = math.inf
"""The deadline of a call no request waits for: it goes after every call that has one."""
READ_COSTS = {
    "DescribeExecution": 1.0,
    "GetExecutionHistory": 0.5,
    "ListExecutions": 5.0,
    "DescribeStateMachineForExecution": 10.0,
}
"""Tokens a call costs: DescribeExecution's refill rate over the API's own, in the regions
where they are lowest (10/s, 20/s, 2/s and 1/s), so that a budget of R a second keeps each
API within R/10 of its account's refill there."""
LEAD = 5.0
"""Seconds before its request's deadline when a call is due, however long the queue."""
BACKOFF_BASE = 0.2
"""Seconds: the cap of the first backoff after a throttled call; it doubles with each one
in a row."""
BACKOFF_CAP = 10.0


@dataclass(eq=False)
class _Turn:
    cost: float
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    gone: bool = False


class ReadBudget:
    """At most ``rate`` tokens a second on average, ``burst`` of them at once."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._bucket = TokenBucket(rate, max(1.0, burst if burst is not None else rate), clock)
        self._clock = clock
        self._jitter = jitter
        self._turns: list[tuple[float, int, _Turn]] = []
        """Waiting calls by when they are due, then in the order they came."""
        self._order = itertools.count()
        self._paused_until = -math.inf
        self._throttled_in_a_row = 0
        self.spent: Counter[str] = Counter()
        """Calls that got their turn, by API."""

    @property
    def rate(self) -> float:
        return self._bucket.rate

    @rate.setter
    def rate(self, rate: float) -> None:
        self._bucket.rate = rate

    @property
    def burst(self) -> float:
        return self._bucket.burst

    @burst.setter
    def burst(self, burst: float) -> None:
        self._bucket.burst = burst

    @property
    def tokens(self) -> float:
        """Tokens available right now (negative while a costly call is paid off)."""
        return self._bucket.tokens

    @property
    def waiting(self) -> int:
        """Calls waiting for their turn."""
        return sum(not turn.gone for _, _, turn in self._turns)

    async def spend(
        self,
        api: str,
        *,
        deadline: float = BACKGROUND,
        patience: float | None = None,
        unless: Callable[[], bool] | None = None,
    ) -> bool:
        """Wait for the turn of a call of ``api`` for a request to be answered by
        ``deadline`` (monotonic seconds; :data:`BACKGROUND` for none) and spend its cost:
        True. False, spending nothing, when no turn
        came within ``patience`` seconds, or ``unless()`` is true when it comes."""
        due = BACKGROUND if deadline == BACKGROUND else min(self._clock(), deadline - LEAD)
        turn = _Turn(READ_COSTS[api])
        heapq.heappush(self._turns, (due, next(self._order), turn))
        try:
            async with asyncio.timeout(patience):
                while True:
                    if self._head() is not turn:
                        turn.woken.clear()
                        await turn.woken.wait()
                        continue
                    if unless is not None and unless():
                        return False
                    delay = self._delay(turn.cost)
                    if delay <= 0:
                        self._bucket.spend(turn.cost)
                        self.spent[api] += 1
                        return True
                    turn.woken.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await turn.woken.wait()
        except TimeoutError:
            return False
        finally:
            turn.gone = True
            if (head := self._head()) is not None:
                head.woken.set()

    def throttled(self) -> None:
        """Step Functions throttled a read: no turns for a while."""
        self._throttled_in_a_row += 1
        cap = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (self._throttled_in_a_row - 1))
        now = self._clock()
        self._paused_until = max(self._paused_until, now + self._jitter() * cap)
        self._bucket.empty()  # the account's bucket is empty: so is ours

    def answered(self) -> None:
        """A call got through: the next throttling backs off from the start again."""
        self._throttled_in_a_row = 0

    def _head(self) -> _Turn | None:
        while self._turns and self._turns[0][2].gone:
            heapq.heappop(self._turns)
        return self._turns[0][2] if self._turns else None

    def _delay(self, cost: float) -> float:
        """Seconds until a call of ``cost`` may be made (0 or less: now)."""
        # A call dearer than the whole bucket goes once it is full, and leaves a debt.
        ready = self._bucket.wait(min(cost, self.burst))
        return max(self._paused_until - self._clock(), ready)
