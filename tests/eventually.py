"""Waiting, in tests, for state that has no event to wait on: always with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

EVENTUALLY = 60.0
"""Seconds a condition may take; never reached by a passing test, it only bounds a hung one."""


async def eventually(predicate: Callable[[], bool], timeout: float = EVENTUALLY) -> None:
    """Return once ``predicate()`` holds; TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 (watches state that has no event)
            await asyncio.sleep(0.02)
