"""The one budget every Step Functions read of the daemon draws on."""

from __future__ import annotations

import asyncio
import time

import pytest

from notifier.aws.read_budget import BACKGROUND, LEAD, READ_COSTS, ReadBudget
from tests.support.clocks import HeldClock


async def test_a_burst_then_the_rate() -> None:
    budget = ReadBudget(rate=100, burst=5)
    began = time.monotonic()
    for _ in range(15):
        assert await budget.spend("DescribeExecution")
    # Five at once, ten more at 100 a second: never sooner than 0.1 s.
    assert time.monotonic() - began >= 0.09
    assert budget.spent["DescribeExecution"] == 15


async def test_calls_cost_what_they_cost_of_their_own_quota() -> None:
    budget = ReadBudget(rate=0.001, burst=10)
    for _ in range(2):
        assert await budget.spend("ListExecutions", patience=0.05)  # 5 each
    assert not await budget.spend("GetExecutionHistory", patience=0.05)
    assert READ_COSTS["GetExecutionHistory"] < READ_COSTS["DescribeExecution"]
    assert budget.tokens == pytest.approx(0, abs=0.01)


async def turns_taken(calls: list[tuple[str, float]]) -> list[str]:
    """The order in which ``calls`` (name, deadline), all queued behind a first call that
    empties the bucket, get their turns."""
    clock = HeldClock()
    budget = ReadBudget(rate=1000, burst=1, clock=clock)
    served: list[str] = []
    assert await budget.spend("DescribeExecution")  # the bucket is empty now

    async def call(name: str, deadline: float) -> None:
        assert await budget.spend("DescribeExecution", deadline=deadline)
        served.append(name)

    tasks = []
    for name, deadline in calls:
        tasks.append(asyncio.ensure_future(call(name, deadline)))
        await asyncio.sleep(0)  # queued in this order
    clock.held_at = None
    await asyncio.gather(*tasks)
    return served


async def test_a_request_close_to_its_deadline_first_sweeps_in_order_background_last() -> None:
    far = time.monotonic() + 60
    calls = [
        ("background 1", BACKGROUND),
        ("held 1", far),
        ("background 2", BACKGROUND),
        ("held 2", far + 30),  # a later deadline, but queued before held 3
        ("held 3", far),
        ("closing", time.monotonic() + LEAD / 2),
        ("closer", time.monotonic()),
    ]
    served = await turns_taken(calls)
    assert served == [
        "closer",
        "closing",
        "held 1",
        "held 2",
        "held 3",
        "background 1",
        "background 2",
    ]


async def test_a_call_queued_again_waits_behind_those_already_waiting() -> None:
    """A sweep's call for a request described before goes behind the ones never described:
    no request is starved by others asked about again and again."""
    budget = ReadBudget(rate=1000, burst=1)
    far = time.monotonic() + 60
    served: list[str] = []
    assert await budget.spend("DescribeExecution")

    async def call(name: str) -> None:
        assert await budget.spend("DescribeExecution", deadline=far)
        served.append(name)

    first = asyncio.ensure_future(call("a"))
    await asyncio.sleep(0)
    others = [asyncio.ensure_future(call(name)) for name in ("b", "c")]
    await first
    again = asyncio.ensure_future(call("a again"))
    await asyncio.gather(*others, again)
    assert served == ["a", "b", "c", "a again"]


async def test_a_turn_not_needed_any_more_is_passed_over_and_costs_nothing() -> None:
    budget = ReadBudget(rate=1000, burst=1)
    assert await budget.spend("DescribeExecution")
    needed = False
    skipped = asyncio.ensure_future(budget.spend("DescribeExecution", unless=lambda: not needed))
    taken = asyncio.ensure_future(budget.spend("DescribeExecution"))
    assert await skipped is False
    assert await taken is True
    assert budget.spent["DescribeExecution"] == 2


async def test_patience_runs_out_and_the_turn_is_left_to_the_next() -> None:
    budget = ReadBudget(rate=0.01, burst=1)
    assert await budget.spend("DescribeExecution", patience=0.01)
    assert not await budget.spend("DescribeExecution", patience=0.05)
    assert budget.waiting == 0


async def test_throttling_pauses_every_turn_for_a_jittered_backoff_that_grows() -> None:
    jitter = iter([1.0, 1.0, 0.0])
    budget = ReadBudget(rate=1000, burst=100, jitter=lambda: next(jitter))
    budget.throttled()
    # Full jitter of at most 0.2 s (here all of it): no turn within 0.1 s.
    assert not await budget.spend("DescribeExecution", patience=0.1)
    budget.throttled()  # the second in a row: up to 0.4 s
    assert not await budget.spend("DescribeExecution", patience=0.3)
    budget.answered()
    budget.throttled()  # a jitter of 0: no pause at all
    assert await budget.spend("DescribeExecution", patience=0.3)


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ReadBudget(0)
