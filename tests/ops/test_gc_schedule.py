"""Garbage collection on a schedule: the automatic collector off, cycles still collected."""

from __future__ import annotations

import asyncio
import gc
import weakref

from notifier.ops.gc_schedule import ScheduledCollection


class Node:
    other: Node


async def test_cycles_are_collected_on_schedule_with_the_automatic_collector_off() -> None:
    assert gc.isenabled()
    frozen_before = gc.get_freeze_count()  # the suite's own process may have frozen some
    async with ScheduledCollection():
        assert not gc.isenabled()
        assert gc.get_freeze_count() > frozen_before
        collected = asyncio.Event()
        first, second = Node(), Node()
        first.other, second.other = second, first
        weakref.finalize(first, collected.set)
        del first, second
        await asyncio.wait_for(collected.wait(), 30)  # bounds a failure only
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
