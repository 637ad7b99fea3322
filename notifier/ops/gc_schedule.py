"""Garbage collection on a schedule, from the event loop, instead of by allocation counts.

Under load nearly every object a request makes is freed by reference counting; the cyclic
collector finds almost nothing, yet its pauses stop the event loop. With Python's
allocation-count thresholds the objects of a thousand held requests were walked over and
over (about 15 % of the daemon's CPU at 300 requests a second) and kept setting off full
collections that walk every live object: pauses of 40 to 100 ms, several a minute, the worst
of the tail latency. Raising the thresholds only made the young collections rarer and
longer, because the young generation also grows whenever old objects are freed.

:class:`ScheduledCollection` freezes what exists once the process serves (botocore's
models, the clients, the application: never walked again), turns the automatic collector
off and collects itself: the young and middle generations ten times a second, everything
once a minute. Collecting the middle generation with the young one keeps each pause to
what a tenth of a second left alive (a held request's objects are walked twice before they
reach the oldest generation, where reference counting frees them): collected once a second
instead, the middle generation held a second's worth of held requests and each of its
collections stopped the loop for 8 to 25 ms. Cyclic garbage still goes within a tenth of a
second, or a minute for old objects.
"""

from __future__ import annotations

import gc

from notifier.lifecycle import BackgroundTasks, Service

TICK = 0.1
"""Seconds between collections of the young and middle generations."""
FULL_EVERY = 600
"""Ticks between full collections."""


class ScheduledCollection(Service):
    """While entered: the objects that existed on entry frozen, collections on a
    schedule; on exit, the collector as it was."""

    def __init__(self) -> None:
        self._tasks = BackgroundTasks()
        self._ticks = 0
        self._was_enabled = True

    async def start(self) -> None:
        gc.collect()
        gc.freeze()
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._tasks.every("gc-schedule", TICK, self._collect)

    def _collect(self) -> None:
        self._ticks += 1
        gc.collect(2 if self._ticks % FULL_EVERY == 0 else 1)

    async def stop(self) -> None:
        await self._tasks.stop()
        gc.unfreeze()
        if self._was_enabled:
            gc.enable()
