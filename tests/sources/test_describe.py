"""DescribeExecution within the read budget: statuses it does not know, redriven
executions and failing calls never stop anything."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest

from notifier.aws.errors import AwsError
from notifier.aws.read_budget import BACKGROUND, ReadBudget
from notifier.requests.ids import new_txn_id
from notifier.requests.waiters import Registry, Status, Transaction
from notifier.sources.describe import DescribePoller
from tests.support.clocks import HeldClock
from tests.support.eventually import eventually
from tests.support.executions import FakeExecutions, arn
from tests.support.sources import describer, running_tasks, started


@pytest.mark.parametrize("status", ["PENDING_REDRIVE", "HIBERNATING"])
async def test_unknown_and_redriven_statuses_are_not_final(
    status: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry, executions = Registry(max_held=10), FakeExecutions()
    txn = started(registry, new_txn_id())
    executions.answer(txn.txn_id, status, status, "SUCCEEDED")
    describe = describer(registry, executions)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert not (await describe.describe(txn) or Status.UNKNOWN).final
            assert txn.completion is None
    unknown = [r for r in caplog.records if "unknown here" in r.getMessage()]
    assert len(unknown) == (1 if status == "HIBERNATING" else 0)  # once, not per call
    assert await describe.describe(txn) is Status.SUCCEEDED
    assert txn.completion is not None and txn.completion.via == "poll"
    assert txn.completion.output == {"for": arn(txn.txn_id)}


async def test_a_failed_call_answers_nothing() -> None:
    registry, executions = Registry(max_held=10), FakeExecutions()
    txn = started(registry, new_txn_id())
    executions.answer(txn.txn_id, AwsError("DescribeExecution", "Throttling", "slow down"))
    assert await describer(registry, executions).describe(txn) is None
    assert txn.completion is None and txn.asked_at is not None


async def test_patience_gives_up_when_the_budget_is_spent() -> None:
    registry, executions = Registry(max_held=10), FakeExecutions(rate=0.01)
    txn = started(registry, new_txn_id())
    await executions.budget.spend("DescribeExecution")  # the only token for the next 100 s
    describe = describer(registry, executions)
    assert await describe.describe(txn, patience=0.05) is None
    assert executions.described == [] and describe.calls == 0


async def test_the_poller_survives_redrives_unknown_statuses_and_errors() -> None:
    registry, executions = Registry(max_held=10), FakeExecutions()
    txn_id = new_txn_id()
    # A re-attached execution of another instance: only the poller asks about it.
    txn = registry.track(Transaction(txn_id, "hello", arn(txn_id), poll=True))
    executions.answer(
        txn_id, "PENDING_REDRIVE", "HIBERNATING", RuntimeError("the inner call broke"), "SUCCEEDED"
    )
    async with registry.hold(txn_id) as waiter:
        async with DescribePoller(registry, describer(registry, executions), 0.01):
            completion = await waiter
            assert "describe-poller" in running_tasks()
    assert completion is not None and completion.status is Status.SUCCEEDED
    assert len(executions.described) == 4 and txn.completion is completion


async def test_the_shared_budget_holds_for_everyone() -> None:
    registry, executions = Registry(max_held=100), FakeExecutions(rate=5)
    executions.budget.rate = 50  # a burst of 5, then 50 a second
    describe = describer(registry, executions)
    txns = [started(registry, new_txn_id()) for _ in range(15)]
    began = time.monotonic()
    await asyncio.gather(*(describe.describe(txn) for txn in txns))
    # 5 at once, then 10 more at 50 a second: at least 0.2 s, whatever the machine.
    assert time.monotonic() - began >= 0.19
    await eventually(lambda: len(executions.described) == 15)


async def test_a_request_close_to_its_deadline_is_described_first_background_last() -> None:
    registry, executions = Registry(max_held=10), FakeExecutions(rate=1000)
    clock = HeldClock()  # no token comes while the calls line up
    executions.budget = ReadBudget(rate=1000, burst=1, clock=clock)
    describe = describer(registry, executions)
    far, soon = time.monotonic() + 60, time.monotonic() + 1
    txns = {name: started(registry, new_txn_id()) for name in ("stale", "a", "b", "closing")}
    deadlines = {"stale": None, "a": far, "b": far, "closing": soon}
    async with contextlib.AsyncExitStack() as holds:
        for name, txn in txns.items():
            await holds.enter_async_context(registry.hold(txn.txn_id, deadline=deadlines[name]))
        await executions.budget.spend("DescribeExecution")  # the bucket is empty now
        calls = []
        for name, txn in txns.items():
            deadline = BACKGROUND if name == "stale" else None
            calls.append(asyncio.ensure_future(describe.describe(txn, deadline=deadline)))
            await asyncio.sleep(0)
        clock.held_at = None
        await asyncio.gather(*calls)
    order = [next(n for n, t in txns.items() if t.execution_arn == a) for a in executions.described]
    assert order == ["closing", "a", "b", "stale"]
