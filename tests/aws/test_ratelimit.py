"""The token bucket every DescribeExecution goes through."""

from __future__ import annotations

import asyncio
import time

import pytest

from notifier.aws.ratelimit import RateLimiter


async def test_a_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate=100, burst=5)
    began = time.monotonic()
    for _ in range(15):
        await limiter.acquire()
    # Five at once, ten more at 100 a second: never sooner than 0.1 s.
    assert time.monotonic() - began >= 0.09
    assert limiter.waited > 0


async def test_callers_are_served_in_the_order_they_asked() -> None:
    limiter = RateLimiter(rate=200, burst=1)
    served: list[int] = []

    async def call(n: int) -> None:
        await limiter.acquire()
        served.append(n)

    await asyncio.gather(*(call(n) for n in range(10)))
    assert served == list(range(10))


async def test_patience_runs_out() -> None:
    limiter = RateLimiter(rate=0.01, burst=1)
    assert await limiter.try_acquire(0.01)
    assert not await limiter.try_acquire(0.05)


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)
