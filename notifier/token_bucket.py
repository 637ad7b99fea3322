"""The one token bucket: ``rate`` tokens a second on average, at most ``burst`` at once.

API keys take from one each (a request over the rate gets 429 and how long to wait); the
Step Functions read budget waits on one (:class:`~notifier.aws.read_budget.ReadBudget`),
where a call may cost more than one token.
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

    @property
    def tokens(self) -> float:
        """Tokens available right now (negative while a costly take is paid off)."""
        self._refill()
        return self._tokens

    def wait(self, cost: float = 1.0) -> float:
        """0 when ``cost`` tokens may be taken now, else the seconds until they may."""
        self._refill()
        return 0.0 if self._tokens >= cost else (cost - self._tokens) / self.rate

    def take(self) -> float:
        """Take a token if one may be taken now (0); else the seconds until one may."""
        wait = self.wait()
        if not wait:
            self._tokens -= 1
        return wait

    def spend(self, cost: float = 1.0) -> None:
        """Take ``cost`` tokens, whether or not there are (the caller waited its turn)."""
        self._refill()
        self._tokens -= cost

    def empty(self) -> None:
        """Drop whatever tokens the bucket holds (a debt stays)."""
        self._refill()
        self._tokens = min(self._tokens, 0.0)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
