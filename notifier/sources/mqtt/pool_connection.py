"""One connection of the MQTT pool and the executions it was given, counted over the
window IoT Core's per-connection rate is measured over."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from notifier.sources.mqtt.source import MqttSource
from notifier.token_bucket import TokenBucket

WINDOW_SECS = 1.0
"""The window a connection's rate is counted over."""


@dataclass(eq=False)
class PoolConnection:
    """One connection of the pool and what it was given."""

    index: int
    source: MqttSource
    last_assigned: float
    """Clock time of its last execution (of its opening, before the first)."""
    assigned_at: deque[float] = field(default_factory=deque)
    """Clock times of the executions it was given within the last window."""
    held: set[str] = field(default_factory=set)
    """Its transactions someone still waits for."""
    in_service: bool = False
    """Subscribed at least once: from then on, a loss of it is a loss of completions."""
    pace: TokenBucket | None = None
    """Its executions spread over the second: a burst would come back as a burst of
    completions, which IoT Core counts over any one second."""

    @property
    def subtopic(self) -> str:
        return self.source.subtopic

    def load(self, now: float) -> int:
        """Executions given to it within the last window."""
        cutoff = now - WINDOW_SECS
        while self.assigned_at and self.assigned_at[0] <= cutoff:
            self.assigned_at.popleft()
        return len(self.assigned_at)

    def room_in(self, now: float, share: int) -> float:
        """Seconds until it may be given another execution: 0 while it has room, within
        ``share`` a window and its pace."""
        window = self.assigned_at[0] + WINDOW_SECS - now if self.load(now) >= share else 0.0
        paced = self.pace.wait() if self.pace is not None else 0.0
        return max(window, paced, 0.0)
