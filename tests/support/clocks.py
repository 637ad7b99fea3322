"""Clocks tests hold still."""

from __future__ import annotations

import time


class HeldClock:
    """``time.monotonic``, held still until released (``held_at = None``): a rate-limited
    budget gives no token while the calls a test queues line up."""

    def __init__(self) -> None:
        self.held_at: float | None = time.monotonic()

    def __call__(self) -> float:
        return self.held_at if self.held_at is not None else time.monotonic()
