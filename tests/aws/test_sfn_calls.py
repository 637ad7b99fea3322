"""The start pacer: this process's StartExecution calls within its share of the account's."""

from __future__ import annotations

import asyncio

import pytest

from notifier.aws.errors import RATE_LIMITED, AwsError
from notifier.aws.sfn_calls import START_BURST_SECONDS, StartPacer
from tests.support.clocks import HeldClock


async def test_a_burst_of_its_size_starts_at_once_and_later_ones_are_booked_in_order() -> None:
    clock = HeldClock()
    assert clock.held_at is not None
    pacer = StartPacer(10, clock)
    for _ in range(int(10 * START_BURST_SECONDS)):
        await pacer.turn(deadline=None)
    assert pacer.booked == 0
    booked = [asyncio.ensure_future(pacer.turn(deadline=clock.held_at + 10)) for _ in range(3)]
    await asyncio.sleep(0)
    assert pacer.booked == pytest.approx(3) and not any(turn.done() for turn in booked)
    clock.held_at = None
    await asyncio.gather(*booked)


async def test_a_turn_after_the_deadline_is_refused_and_books_nothing() -> None:
    clock = HeldClock()
    assert clock.held_at is not None
    pacer = StartPacer(10, clock)
    for _ in range(int(10 * START_BURST_SECONDS)):
        await pacer.turn(deadline=None)
    with pytest.raises(AwsError) as refused:
        await pacer.turn(deadline=None)
    assert (refused.value.code, refused.value.throttled) == (RATE_LIMITED, True)
    # The next turn is 0.1 s away: not within 0.05 s, within 0.15 s.
    with pytest.raises(AwsError):
        await pacer.turn(deadline=clock.held_at + 0.05)
    assert pacer.booked == 0
    turn = asyncio.ensure_future(pacer.turn(deadline=clock.held_at + 0.15))
    await asyncio.sleep(0)
    assert pacer.booked == pytest.approx(1)
    clock.held_at = None
    await turn
