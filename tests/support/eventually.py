"""Waiting, in tests, for state that has no event to wait on: always with a deadline."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

EVENTUALLY = 60.0
"""Seconds a condition may take; never reached by a passing test, it only bounds a hung one."""


async def eventually(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = EVENTUALLY,
    interval: float = 0.02,
) -> T:
    """What ``predicate()`` gives once it is true (awaited when it is a coroutine function,
    e.g. one that asks a server); TimeoutError after ``timeout`` seconds. Asks every
    ``interval`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            held = predicate()
            if inspect.isawaitable(held):
                held = await held
            if held:
                return held  # type: ignore[return-value]
            await asyncio.sleep(interval)
