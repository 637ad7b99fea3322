"""The safety net while MQTT is up: one look at a request's hold deadline, a re-attach that
asks when nothing was heard, and the slow sweep; nothing when completions arrive."""

from __future__ import annotations

import time

from notifier.requests.ids import new_txn_id
from notifier.requests.waiters import Completion, Registry, Status
from notifier.sources.safety_net_while_up import SafetyNet
from tests.support.eventually import eventually
from tests.support.executions import FakeExecutions, arn
from tests.support.sources import describer, running_tasks, started


def safety_net(
    registry: Registry,
    executions: FakeExecutions,
    *,
    interval: float = 3600,
    after: float = 30,
) -> SafetyNet:
    return SafetyNet(
        registry, describer(registry, executions), sweep_interval=interval, sweep_after=after
    )


async def test_at_its_deadline_a_held_request_gets_one_look() -> None:
    registry, executions = Registry(max_held=10), FakeExecutions()
    txn = started(registry, new_txn_id())
    executions.answer(txn.txn_id, "SUCCEEDED")
    net = safety_net(registry, executions)
    async with registry.hold(txn.txn_id) as waiter:
        held_since = time.monotonic()
        await net.at_deadline(txn, held_since)
        assert waiter.done() and txn.completion is not None
        assert txn.completion.status is Status.SUCCEEDED and txn.completion.via == "poll"
        await net.at_deadline(txn, held_since)  # resolved: nothing more to ask
    assert executions.described == [arn(txn.txn_id)]


async def test_no_look_when_step_functions_was_asked_during_the_hold() -> None:
    registry, executions = Registry(max_held=10), FakeExecutions()
    txn = started(registry, new_txn_id())
    held_since = time.monotonic() - 1
    txn.asked_at = time.monotonic()  # a sweep asked meanwhile
    await safety_net(registry, executions).at_deadline(txn, held_since)
    assert executions.described == []


async def test_a_reattach_asks_only_when_nothing_was_heard_for_a_while() -> None:
    registry, executions = Registry(max_held=10), FakeExecutions()
    recent, quiet = started(registry, new_txn_id()), started(registry, new_txn_id())
    quiet.tracked_at -= 31
    executions.answer(quiet.txn_id, "TIMED_OUT")
    net = safety_net(registry, executions, after=30)
    await net.on_reattach(recent, time.monotonic() + 30)
    await net.on_reattach(quiet, time.monotonic() + 30)
    assert executions.described == [arn(quiet.txn_id)]
    assert quiet.completion is not None and quiet.completion.status is Status.TIMED_OUT


async def test_the_slow_sweep_finds_what_was_lost_and_survives_errors() -> None:
    registry, executions = Registry(max_held=10), FakeExecutions()
    lost, fresh = started(registry, new_txn_id()), started(registry, new_txn_id())
    lost.tracked_at -= 60
    executions.answer(
        lost.txn_id, RuntimeError("the inner call broke"), "PENDING_REDRIVE", "ABORTED"
    )
    net = safety_net(registry, executions, interval=0.01, after=0.05)
    async with registry.hold(lost.txn_id) as waiter, registry.hold(fresh.txn_id), net:
        completion = await waiter
        assert "safety-sweep" in running_tasks()
    assert completion is not None and completion.status is Status.ABORTED
    assert executions.described.count(arn(lost.txn_id)) == 3
    assert net.found["sweep"] == 1


async def test_nothing_is_asked_while_everything_arrives() -> None:
    registry, executions = Registry(max_held=10), FakeExecutions()
    net = safety_net(registry, executions, interval=0.01, after=0.05)
    async with net:
        for _ in range(5):
            txn = started(registry, new_txn_id())
            async with registry.hold(txn.txn_id):
                own = Completion(Status.SUCCEEDED, via="mqtt", execution_arn=arn(txn.txn_id))
                registry.resolve(txn.txn_id, own)
        await eventually(lambda: net.calls == 0 and len(registry) == 5)
    assert executions.described == []
