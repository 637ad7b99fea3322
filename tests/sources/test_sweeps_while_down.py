"""DescribeExecution sweeps: while MQTT is down (each held request again once due, by its
age), once after it is back, and always in poll mode; a failing call or a status they do
not know never stops them."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from notifier.requests.ids import new_txn_id
from notifier.requests.waiters import Registry, Status
from notifier.sources.sweeps_while_down import Reconciler
from tests.support.eventually import eventually
from tests.support.executions import FakeExecutions, arn, not_found
from tests.support.sources import describer, running_tasks, started


class FakeConnection:
    def __init__(self, connected: bool = True) -> None:
        self.connected = connected
        self._changed = asyncio.Event()
        self.awaited: list[bool] = []
        """What the reconciler has waited for the connection to become, in order."""

    def set(self, connected: bool) -> None:
        self.connected = connected
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_connected(self, value: bool) -> None:
        self.awaited.append(value)
        while self.connected is not value:
            await self._changed.wait()


async def test_nothing_is_described_while_mqtt_is_up() -> None:
    registry, executions = Registry(max_held=10), FakeExecutions()
    txn = started(registry, new_txn_id())
    connection = FakeConnection()
    reconciler = Reconciler(
        registry, describer(registry, executions), connection, interval=0.01, max_interval=1
    )
    async with registry.hold(txn.txn_id), reconciler:
        # Idle: waiting for MQTT to go down, with nothing asked.
        await eventually(lambda: connection.awaited == [False])
    assert executions.described == [] and reconciler.sweeps == 0


async def test_down_it_sweeps_at_once_and_until_everything_held_is_answered() -> None:
    registry, executions = Registry(max_held=10), FakeExecutions()
    young, old = started(registry, new_txn_id()), started(registry, new_txn_id())
    assert old.started_at is not None
    old.started_at -= timedelta(minutes=10)
    old.tracked_at -= 60
    executions.answer(young.txn_id, "RUNNING", "PENDING_REDRIVE", "HIBERNATING", "SUCCEEDED")
    executions.answer(old.txn_id, "RUNNING")
    connection = FakeConnection()
    reconciler = Reconciler(
        registry, describer(registry, executions), connection, interval=0.05, max_interval=5
    )
    async with registry.hold(young.txn_id) as waiter, registry.hold(old.txn_id), reconciler:
        connection.set(False)
        completion = await waiter
        assert completion is not None and completion.status is Status.SUCCEEDED
    # The young one was asked again every 0.05 s; the one running for ten minutes, due at
    # once, then only every 5 s (a quarter of its age, at most max_interval): once.
    assert executions.described.count(arn(young.txn_id)) == 4
    assert executions.described.count(arn(old.txn_id)) == 1


async def test_once_back_one_sweep_closes_the_gap() -> None:
    registry, executions = Registry(max_held=10), FakeExecutions()
    txns = [started(registry, new_txn_id()) for _ in range(3)]
    for txn in txns:
        executions.answer(txn.txn_id, "SUCCEEDED")
    connection = FakeConnection()
    # Nobody is due while it is down (an interval of an hour): only the sweep after counts.
    reconciler = Reconciler(
        registry, describer(registry, executions), connection, interval=3600, max_interval=3600
    )
    async with registry.hold(txns[0].txn_id), registry.hold(txns[1].txn_id), reconciler:
        async with registry.hold(txns[2].txn_id):
            connection.set(False)
            # Sweeping while down, with nobody due: waiting for MQTT to come back.
            await eventually(lambda: connection.awaited == [False, True])
            assert executions.described == []
            connection.set(True)
            await eventually(lambda: reconciler.sweeps == 1 and reconciler.calls == 3)
    assert all(txn.completion is not None for txn in txns)


async def test_poll_mode_sweeps_survive_errors_and_statuses_they_do_not_know() -> None:
    registry, executions = Registry(max_held=10), FakeExecutions()
    txn = started(registry, new_txn_id())
    executions.answer(
        txn.txn_id,
        not_found(txn.txn_id),  # not started yet: not even logged
        RuntimeError("the inner call broke"),  # the loop logs it and starts again
        "PENDING_REDRIVE",
        "PAUSED",
        "FAILED",
    )
    reconciler = Reconciler(
        registry, describer(registry, executions), None, interval=0.01, max_interval=0.01
    )
    async with registry.hold(txn.txn_id) as waiter, reconciler:
        completion = await waiter
        assert "reconciler" in running_tasks()
    assert completion is not None and completion.status is Status.FAILED
    assert len(executions.described) == 5
