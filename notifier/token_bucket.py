"""The one token bucket: ``rate`` tokens a second on average, at most ``burst`` at once.

API keys take from one each (a request over the rate gets 429 and how long to wait); the
DescribeExecution budget waits on one (:class:`~notifier.aws.ratelimit.RateLimiter`).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def wait(self) -> float:
        """0 when a token may be taken now, else the seconds until one may."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def take(self) -> float:
        """Take a token if one may be taken now (0); else the seconds until one may."""
        wait = self.wait()
        if not wait:
            self._tokens -= 1
        return wait

    def spend(self) -> None:
        """Take a token, whether or not there is one (the caller waited its turn)."""
        self._refill()
        self._tokens -= 1

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
