"""An event loop loaded as a busy test process's is: many ready tasks, each holding it a moment.

Code that awaits anything then takes a turn of the loop, ``turn_seconds``, for each await,
so a sequence of steps that is instant on an idle loop takes seconds: what other processes
(a client reconnecting, a timer in another thread) meet in the meantime is what a loaded
machine shows now and then."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


@asynccontextmanager
async def busy_event_loop(turn_seconds: float = 0.15, tasks: int = 30) -> AsyncIterator[None]:
    """While inside, ``tasks`` tasks each hold the running loop ``turn_seconds / tasks``
    between two yields."""
    done = asyncio.Event()
    hold = turn_seconds / tasks

    async def busy() -> None:
        while not done.is_set():
            until = time.perf_counter() + hold
            while time.perf_counter() < until:
                pass
            await asyncio.sleep(0)

    running = [asyncio.create_task(busy()) for _ in range(tasks)]
    try:
        yield
    finally:
        done.set()
        await asyncio.gather(*running)
