"""How the local stack counts against AWS's quotas, and what it reports when one is exceeded.

:class:`SlidingWindow` bounds what happens within any one second (IoT Core's per-connection
rates: no second, wherever it starts, holds more); :class:`TokenBucket` is Step Functions'
throttling scheme. :class:`QuotaEvents` counts each discard, refusal or throttle by kind and
logs them, the first of a kind at once and then at most one summary per kind every
``LOG_INTERVAL`` seconds. All are safe to use from several threads (the AWS endpoint serves
each request on a thread of its own).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable

from notifier.local.quotas import Bucket

log = logging.getLogger("notifier.local.quotas")

LOG_INTERVAL = 10.0
"""Seconds between two log lines about the same kind of quota event."""

EVENT_KINDS = (
    "iot_discarded",
    "iot_payload_refused",
    "iot_subscriptions_refused",
    "iot_connects_refused",
    "sfn_throttled",
)
"""What :class:`QuotaEvents` counts; every kind is reported, 0 when it never happened."""

Clock = Callable[[], float]


class SlidingWindow:
    """At most ``limit`` (messages, bytes) within any ``seconds``; without a limit it only
    measures. :attr:`peak` is the most it ever let through within one window."""

    def __init__(self, limit: float | None, seconds: float = 1.0) -> None:
        self.limit = limit
        self.seconds = seconds
        self.peak = 0.0
        self._entries: deque[tuple[float, float]] = deque()
        self._total = 0.0

    def fits(self, now: float, amount: float = 1.0) -> bool:
        """Whether ``amount`` fits in the window ending ``now``."""
        entries = self._entries
        while entries and entries[0][0] <= now - self.seconds:
            self._total -= entries.popleft()[1]
        return self.limit is None or self._total + amount <= self.limit

    def add(self, now: float, amount: float = 1.0) -> None:
        self._entries.append((now, amount))
        self._total += amount
        self.peak = max(self.peak, self._total)

    def admit(self, now: float, amount: float = 1.0) -> bool:
        """Whether ``amount`` fits in the window ending ``now``; if it does, it is counted."""
        if not self.fits(now, amount):
            return False
        self.add(now, amount)
        return True


def rate_window(rate: float | None) -> SlidingWindow:
    """At most ``rate`` a second: below one a second, one in every ``1 / rate`` seconds."""
    if rate is None or rate >= 1:
        return SlidingWindow(rate)
    return SlidingWindow(1, 1 / rate)


class TokenBucket:
    def __init__(self, bucket: Bucket, clock: Clock = time.monotonic) -> None:
        self.bucket = bucket
        self._clock = clock
        self._tokens = bucket.size
        self._at = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Whether a token was there (and is now taken)."""
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._at)
            self._tokens = min(self.bucket.size, self._tokens + elapsed * self.bucket.refill)
            self._at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


class QuotaEvents:
    """Quota events by kind (:data:`EVENT_KINDS`), counted and logged at a bounded rate."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._counts: Counter[str] = Counter()
        self._clock = clock
        self._logged_at: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()
        self._lock = threading.Lock()

    def record(self, kind: str, detail: str) -> None:
        """One event of ``kind``; ``detail`` says what was refused and why, for the log."""
        with self._lock:
            self._counts[kind] += 1
            now = self._clock()
            last = self._logged_at.get(kind)
            if last is not None and now - last < LOG_INTERVAL:
                self._unlogged[kind] += 1
                return
            self._logged_at[kind] = now
            more = self._unlogged.pop(kind, 0)
        suffix = f" (and {more} more since the last report)" if more else ""
        log.warning("AWS quota: %s%s", detail, suffix)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {kind: self._counts[kind] for kind in EVENT_KINDS}


class StepFunctionsThrottle:
    """Step Functions' API throttling: one token bucket per throttled operation (per account
    and region; the local stack has one of each)."""

    def __init__(
        self, buckets: dict[str, Bucket], events: QuotaEvents, clock: Clock = time.monotonic
    ) -> None:
        self._buckets = {operation: TokenBucket(b, clock) for operation, b in buckets.items()}
        self._events = events

    def admit(self, operation: str) -> bool:
        """Whether a call of ``operation`` may proceed; a throttled one is recorded."""
        bucket = self._buckets.get(operation)
        if bucket is None or bucket.take():
            return True
        self._events.record(
            "sfn_throttled",
            f"Step Functions {operation} throttled (bucket {bucket.bucket}: size/refill a second)",
        )
        return False


THROTTLING_ERROR = {"__type": "ThrottlingException", "message": "Rate exceeded"}
"""Step Functions' answer to a throttled call (HTTP 400, JSON 1.0 protocol)."""
