"""A token bucket shared by everything that calls one rate-limited AWS API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from notifier.token_bucket import TokenBucket


class RateLimiter:
    """At most ``rate`` calls a second on average, ``burst`` of them at once.

    Callers are served in the order they ask (asyncio's lock is fair), so a caller that
    arrives while a long sweep holds the bucket waits behind the calls already queued,
    never behind calls made after it.
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._bucket = TokenBucket(rate, self.burst)
        self._turn = asyncio.Lock()
        self.waited = 0.0
        """Seconds callers have spent waiting for a token, in all."""

    async def acquire(self, unless: Callable[[], bool] | None = None) -> bool:
        """Return once a call may be made: True. With ``unless``, a caller whose turn comes
        when ``unless()`` is true gets False at once and spends nothing."""
        async with self._turn:
            if unless is not None and unless():
                return False
            delay = self._bucket.wait()
            if delay:
                self.waited += delay
                await asyncio.sleep(delay)
                if unless is not None and unless():
                    return False
            self._bucket.spend()
            return True

    async def try_acquire(self, patience: float) -> bool:
        """Like :meth:`acquire`, but give up (False) after ``patience`` seconds."""
        try:
            async with asyncio.timeout(patience):
                return await self.acquire()
        except TimeoutError:
            return False
