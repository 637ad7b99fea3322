"""Step Functions calls made within the account's quotas: a read in its turn in this
process's :class:`~notifier.aws.read_budget.ReadBudget`, a StartExecution in its turn at
this process's :class:`StartPacer`, and a throttled write made again after a backoff (full
jitter) while its caller can wait. Each throttled call is reported to ``on_throttled`` with
its API's name."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from notifier.aws.errors import RATE_LIMITED, AwsError
from notifier.aws.read_budget import BACKGROUND, ReadBudget
from notifier.token_bucket import TokenBucket

RETRY_BACKOFF_BASE = 0.1
"""Seconds: the cap of the first backoff of a throttled write; it doubles with each retry,
up to :data:`RETRY_BACKOFF_CAP`."""
RETRY_BACKOFF_CAP = 2.0
START_BURST_SECONDS = 4.0
"""The :class:`StartPacer`'s burst, in seconds of its rate: less than Step Functions'
StartExecution buckets hold (1,300 at 300/s and 800 at 150/s, 4.3 and 5.3 seconds)."""


class StartPacer:
    """This process's StartExecution calls, at most ``rate`` a second (``[daemon]
    sfn_start_rate`` over the instance's workers) with bursts of :data:`START_BURST_SECONDS`
    of it, in the order they come.

    Step Functions refills StartExecution at 300 a second in us-east-1, us-west-2 and
    eu-west-1 and 150 elsewhere, for the whole account: a start beyond this process's share
    waits its turn here instead of being throttled there and backing off.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._bucket = TokenBucket(rate, rate * START_BURST_SECONDS, clock)

    async def turn(self, deadline: float | None) -> None:
        """Wait for a start's turn. Turns are booked in order, so a wait is never longer
        than the starts booked before it take. Raises :class:`AwsError` (``RateLimited``,
        answered 503) when the turn would come after ``deadline`` (monotonic seconds; None:
        now), booking nothing."""
        wait = self._bucket.wait()
        if wait and (deadline is None or self._clock() + wait > deadline):
            raise AwsError(
                "StartExecution",
                RATE_LIMITED,
                "this instance's share of Step Functions starts (sfn_start_rate) is spent",
            )
        self._bucket.spend()
        if wait:
            await asyncio.sleep(wait)

    @property
    def booked(self) -> float:
        """Starts booked beyond the tokens there are: how far behind the pacer is."""
        return max(0.0, -self._bucket.tokens)


async def read_within(
    budget: ReadBudget,
    on_throttled: Callable[[str], None],
    api: str,
    call: Callable[[], Awaitable[Mapping[str, Any]]],
    *,
    deadline: float = BACKGROUND,
    patience: float | None = None,
    unless: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """``call``, a read of ``api``, in its turn in ``budget`` (see :meth:`ReadBudget.spend`).
    With ``patience``, a throttled call is made again in a later turn while the patience
    lasts; without, it is reported at once (a sweep asks again anyway).

    Raises :class:`AwsError`: AWS's error, the last throttling when the patience ran out
    after one, ``RateLimited`` when no turn came at all (or ``unless()`` was true at its
    turn).
    """
    give_up_at = None if patience is None else time.monotonic() + patience
    throttling: AwsError | None = None
    while True:
        left = None if give_up_at is None else max(0.0, give_up_at - time.monotonic())
        if not await budget.spend(api, deadline=deadline, patience=left, unless=unless):
            raise throttling or AwsError(
                api, RATE_LIMITED, "this instance's share of Step Functions reads is spent"
            )
        try:
            answer = dict(await call())
        except (ClientError, BotoCoreError) as exc:
            error = AwsError.wrap(api, exc)
            if not error.throttled:
                raise error from exc
            on_throttled(api)
            budget.throttled()
            if give_up_at is None or time.monotonic() >= give_up_at:
                raise error from exc
            throttling = error
            continue
        budget.answered()
        return answer


async def retry_throttled(
    api: str,
    call: Callable[[], Awaitable[object]],
    on_throttled: Callable[[str], None],
    deadline: float | None,
    *,
    done_when_again: str | None = None,
    turn: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """``call``; while it is throttled, again after a backoff until ``deadline`` (monotonic
    seconds; None: once), each attempt again after awaiting ``turn`` (such as the
    :class:`StartPacer`'s). An attempt after the first that fails with ``done_when_again``
    (such as ``ExecutionAlreadyExists``) means an earlier attempt that seemed to fail got
    through: done. Raises :class:`AwsError`: AWS's error, the last throttling, or what
    ``turn`` raises."""
    attempt = 0
    while True:
        attempt += 1
        try:
            await call()
            return
        except (ClientError, BotoCoreError) as exc:
            error = AwsError.wrap(api, exc)
        if attempt > 1 and error.code == done_when_again:
            return
        if not error.throttled:
            raise error
        on_throttled(api)
        cap = min(RETRY_BACKOFF_CAP, RETRY_BACKOFF_BASE * 2 ** (attempt - 1))
        pause = random.random() * cap  # nosec B311  # backoff jitter, not a secret
        if deadline is None or time.monotonic() + pause >= deadline:
            raise error
        await asyncio.sleep(pause)
        if turn is not None:
            await turn()
