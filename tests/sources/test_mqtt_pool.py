"""The pool of MQTT connections against a real broker (amqtt, authenticating with the iotauth
authorizer in-process): executions spread by rate, connections opened ahead of their share
and closed when idle, each on its own subtopic and client id, and a cut of one falling back
to the sweeps for that one's executions only. Rates are counted on a clock the tests move."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
import pytest

from notifier.app.state import MQTT_POOL, SQS
from notifier.config import MqttSettings
from notifier.local.broker import LocalBroker
from notifier.metrics import Metrics
from notifier.requests.ids import new_txn_id
from notifier.requests.waiters import Completion, Registry, Status, Transaction
from notifier.sources.mqtt import pool as pool_module
from notifier.sources.mqtt.pool import IDLE_SECS, MqttPool
from notifier.sources.sweeps_while_down import Reconciler
from tests.sources.test_mqtt import Publisher, access_control, issue_token, message
from tests.support.daemons import DaemonFactory, call
from tests.support.eventually import eventually
from tests.support.executions import FakeExecutions, arn
from tests.support.sources import describer, started


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def broker() -> AsyncIterator[LocalBroker]:
    async with LocalBroker("127.0.0.1", 0, access_control()) as running:
        yield running


def pool_for(
    broker: LocalBroker,
    registry: Registry,
    clock: Clock,
    peak: float,
    share: float = 0.8,
    pace_burst_secs: float = 1.0,
) -> MqttPool:
    """A pool on ``clock``; by default each connection may take its whole second's share at
    once, so the tests count by the window alone (the pace has a test of its own)."""
    settings = MqttSettings(
        transport="tcp",
        endpoint="127.0.0.1",
        port=broker.port,
        keep_alive_secs=30,
        reconnect_max_secs=2,
        peak_completions_per_second=peak,
        connection_share=share,
    )
    return MqttPool(
        settings,
        instance_id="unit",
        registry=registry,
        endpoint="127.0.0.1",
        tokens=issue_token,
        clock=clock,
        pace_burst_secs=pace_burst_secs,
    )


def all_subscribed(pool: MqttPool) -> bool:
    return all(connection.source.connected for connection in pool.connections)


def small_pool(broker: LocalBroker, registry: Registry, clock: Clock) -> MqttPool:
    """Two connections at the most, of one execution a second each."""
    return pool_for(broker, registry, clock, peak=2, share=0.01)


@asynccontextmanager
async def full_small_pool(broker: LocalBroker, clock: Clock) -> AsyncIterator[MqttPool]:
    """:func:`small_pool` with both connections subscribed and given their share of this
    second: the next start waits."""
    async with small_pool(broker, Registry(max_held=10), clock) as pool:
        await eventually(lambda: pool.connected)
        assert [await pool.reserve(new_txn_id()) for _ in range(2)] == ["unit", "unit/1"]
        yield pool


async def one_on_each(pool: MqttPool, registry: Registry) -> tuple[Transaction, Transaction]:
    """Two executions, the first given to connection 0, the second to connection 1, which
    the first one's start opened."""
    await eventually(lambda: pool.connected)
    first, second = started(registry, new_txn_id()), started(registry, new_txn_id())
    assert pool.assign(first.txn_id) == "unit"
    await eventually(lambda: len(pool.connections) == 2 and all_subscribed(pool))
    assert pool.assign(second.txn_id) == "unit/1"
    return first, second


async def test_executions_are_spread_by_rate_over_connections_opened_ahead(
    broker: LocalBroker,
) -> None:
    registry, clock = Registry(max_held=1000), Clock()
    async with pool_for(broker, registry, clock, peak=300) as pool:
        assert (pool.per_connection, pool.max_connections) == (80, 4)
        await eventually(lambda: pool.connected)
        given = [pool.assign(new_txn_id()) for _ in range(39)]
        assert set(given) == {"unit"} and len(pool.connections) == 1
        given.append(pool.assign(new_txn_id()))  # half of its share: the next one opens
        assert [c.subtopic for c in pool.connections] == ["unit", "unit/1"]
        given += [pool.assign(new_txn_id()) for _ in range(40)]
        assert set(given) == {"unit"}  # connection 1 takes nothing before it is subscribed
        await eventually(lambda: pool.connections[1].source.connected)
        given = [pool.assign(new_txn_id()) for _ in range(80)]
        assert set(given) == {"unit/1"}
        for index in (2, 3):  # each opened by the first execution given past half the room
            assert len(pool.connections) == index + 1
            await eventually(lambda: all_subscribed(pool))
            given = [pool.assign(new_txn_id()) for _ in range(80)]
            assert set(given) == {f"unit/{index}"}
        # Every one is full: the next goes over the least loaded's share; no fifth opens.
        pool.assign(new_txn_id())
        assert pool.overloaded == 1 and len(pool.connections) == 4
        # A second later the first ones have room again.
        clock.now += 1.0
        assert pool.assign(new_txn_id()) == "unit"
        # The same transaction keeps its subtopic (a retried start sends the same input).
        txn_id = new_txn_id()
        assert pool.assign(txn_id) == pool.assign(txn_id) == "unit"


async def test_each_connection_has_its_own_subtopic_client_id_and_messages(
    broker: LocalBroker,
) -> None:
    registry, clock = Registry(max_held=10), Clock()
    async with (
        small_pool(broker, registry, clock) as pool,
        Publisher(broker.port) as publisher,
    ):
        assert (pool.per_connection, pool.max_connections) == (1, 2)
        first, second = await one_on_each(pool, registry)
        zero, one = (c.source for c in pool.connections)
        assert zero.client_id.startswith("unit.") and one.client_id.startswith("unit.")
        assert zero.client_id != one.client_id
        assert (zero.topic_filter, one.topic_filter) == ("notifier/unit/+", "notifier/unit/1/+")

        await publisher.publish(f"notifier/unit/1/{second.txn_id}", message(second.txn_id))
        await eventually(lambda: second.completion is not None)
        await publisher.publish(f"notifier/unit/{first.txn_id}", message(first.txn_id))
        await eventually(lambda: first.completion is not None)
        assert (zero.received, one.received) == (1, 1)  # none delivered to both
        await publisher.publish(f"notifier/unit/1/{second.txn_id}", message(second.txn_id))
        await eventually(lambda: one.duplicated == 1)

        metrics = Metrics()
        metrics.watch_mqtt(pool)
        scraped = metrics.render().decode()
        assert "notifier_mqtt_connections 2.0" in scraped
        assert "notifier_mqtt_connections_max 2.0" in scraped
        assert 'notifier_mqtt_messages_total{connection="1",outcome="received"} 2.0' in scraped
        assert 'notifier_mqtt_messages_total{connection="1",outcome="duplicated"} 1.0' in scraped
        assert 'notifier_mqtt_messages_total{connection="0",outcome="received"} 1.0' in scraped
        assert 'notifier_mqtt_connection_peak_messages_per_second{connection="1"}' in scraped


async def test_a_completion_on_any_connection_answers_its_own_held_request(
    broker: LocalBroker,
) -> None:
    registry, clock = Registry(max_held=10), Clock()
    async with (
        small_pool(broker, registry, clock) as pool,
        Publisher(broker.port) as publisher,
        AsyncExitStack() as holds,
    ):
        txns = await one_on_each(pool, registry)
        waiters = [await holds.enter_async_context(registry.hold(t.txn_id)) for t in txns]
        # Another execution's completion under a held transaction's id is refused.
        forged = {**message(txns[1].txn_id), "executionArn": arn(new_txn_id())}
        await publisher.publish(f"notifier/unit/1/{txns[1].txn_id}", forged)
        # Each completion, on the other's connection, answers its own request.
        for txn, subtopic, output in ((txns[0], "unit/1", "a"), (txns[1], "unit", "b")):
            body = {**message(txn.txn_id), "output": output}
            await publisher.publish(f"notifier/{subtopic}/{txn.txn_id}", body)
        answers: list[Completion | None] = [await waiter for waiter in waiters]
        assert [a.output if a else None for a in answers] == ["a", "b"]
        assert pool.connections[1].source.received == 2


async def test_an_idle_connection_closes_once_its_executions_are_done(
    broker: LocalBroker,
) -> None:
    registry, clock = Registry(max_held=10), Clock()
    async with small_pool(broker, registry, clock) as pool:
        _, second = await one_on_each(pool, registry)
        async with registry.hold(second.txn_id):
            clock.now += IDLE_SECS - 1
            assert pool.close_idle() == []  # given an execution less than IDLE_SECS ago
            clock.now += 1
            assert pool.close_idle() == []  # its execution is still held
            done = Completion(Status.SUCCEEDED, via="mqtt", execution_arn=second.execution_arn)
            registry.resolve(second.txn_id, done)
            closing = pool.connections[1].source
            assert pool.close_idle() == [1]  # the first connection never closes
        assert [c.index for c in pool.connections] == [0] and pool.closed == 1
        assert pool.subtopic_of(second) == "unit"  # what it was given is forgotten
        await eventually(lambda: not closing.connected)
        # Opened again when the rate needs it, under the same subtopic.
        pool.assign(new_txn_id())
        assert [c.subtopic for c in pool.connections] == ["unit", "unit/1"]


async def drop_link(broker: LocalBroker, client_id: str) -> None:
    """Close ``client_id``'s TCP connection from the broker's end, as a cut link would."""
    amqtt = broker._broker
    assert amqtt is not None
    _session, handler = amqtt._sessions[client_id]
    await handler.writer.close()


async def test_what_a_connection_was_given_is_forgotten_with_its_transaction(
    broker: LocalBroker,
) -> None:
    registry, clock = Registry(max_held=10, max_recent=1), Clock()
    async with small_pool(broker, registry, clock) as pool:
        first, second = await one_on_each(pool, registry)
        assert pool.subtopic_of(second) == "unit/1"
        registry.track(Transaction(new_txn_id(), "hello", arn("x")))  # evicts both
        assert registry.get(second.txn_id) is None
        assert pool.subtopic_of(second) == "unit"  # not known here any more
        assert pool.subtopic_of(first) == "unit"


async def test_a_cut_of_one_connection_falls_back_for_its_executions_only(
    broker: LocalBroker,
) -> None:
    registry, clock, executions = Registry(max_held=10), Clock(), FakeExecutions()
    async with small_pool(broker, registry, clock) as pool:
        kept, cut = await one_on_each(pool, registry)
        executions.answer(kept.txn_id, "RUNNING")
        executions.answer(cut.txn_id, "RUNNING", "SUCCEEDED")
        sweeps = Reconciler(
            registry,
            describer(registry, executions),
            pool,
            interval=0.05,
            max_interval=0.05,
            exposed=pool.exposed,
        )
        async with (
            sweeps,
            registry.hold(kept.txn_id),
            registry.hold(cut.txn_id) as cut_answer,
        ):
            assert not pool.exposed(kept) and not pool.exposed(cut)
            one = pool.connections[1].source
            await drop_link(broker, one.client_id)
            answer = await cut_answer
            assert answer is not None and answer.via == "poll"
            await eventually(lambda: one.connected and one.reconnects == 1)
        assert arn(cut.txn_id) in executions.described
        assert arn(kept.txn_id) not in executions.described  # its connection never dropped
        assert pool.connections[0].source.reconnects == 0


async def test_a_workflow_notifies_the_connection_its_execution_was_given(
    daemon_factory: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    """Against the local stack: the execution's input names the second connection's
    subtopic, the workflow and the status forwarder publish there, and the forwarder's
    queue copy still reaches the instance's own queue."""
    env = {
        "NOTIFIER_MQTT_PEAK_COMPLETIONS_PER_SECOND": "2",
        "NOTIFIER_MQTT_CONNECTION_SHARE": "0.01",
    }
    async with daemon_factory(**env) as daemon:
        pool, sqs = daemon.app[MQTT_POOL], daemon.app[SQS]
        pool.clock = lambda: 0.0  # every execution within the same second
        hello, wait = f"{daemon.url}/hello", {"Prefer": "wait=60"}
        status, _, body = await call(http, "POST", hello, json={}, headers=wait)
        assert status == 200 and body["status"] == "SUCCEEDED", body
        await eventually(lambda: len(pool.connections) == 2 and all_subscribed(pool))
        one = pool.connections[1].source  # subscribed to <instance>/1's topics only
        await eventually(lambda: sqs.received >= 1)
        status, _, body = await call(http, "POST", hello, json={}, headers=wait)
        assert status == 200 and body["status"] == "SUCCEEDED", body
        assert body["completedVia"] in ("mqtt", "sqs")
        await eventually(lambda: one.received >= 1 and sqs.received >= 2)
        assert one.ignored == one.duplicated  # nothing it could not read


async def test_a_start_waits_for_a_connection_with_room_rather_than_overload_one(
    broker: LocalBroker,
) -> None:
    """While every subscribed connection has had its share this second, a start waits: for
    the connection opening, then for the window to move on; nothing goes over a share."""
    registry, clock = Registry(max_held=10), Clock()
    async with small_pool(broker, registry, clock) as pool:
        await eventually(lambda: pool.connected)
        assert await pool.reserve(new_txn_id()) == "unit"
        # Connection 0 is full; connection 1, opening, takes the next once subscribed.
        assert await pool.reserve(new_txn_id()) == "unit/1"
        assert all_subscribed(pool)
        # Both full, and no third may open: the next start waits for the next second.
        third = asyncio.ensure_future(pool.reserve(new_txn_id()))
        await asyncio.sleep(0)
        assert not third.done()
        clock.now += 1.0
        assert await third == "unit"
        assert pool.overloaded == 0


async def test_starts_that_wait_are_given_connections_in_the_order_they_came(
    broker: LocalBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool_module, "ASSIGN_PATIENCE_SECS", 30.0)
    clock = Clock()
    async with full_small_pool(broker, clock) as pool:
        waiting = []
        for _ in range(3):
            waiting.append(asyncio.ensure_future(pool.reserve(new_txn_id())))
            await asyncio.sleep(0)
        assert not any(start.done() for start in waiting)
        clock.now += 1.0  # room for two: the first two in line
        assert [await waiting[0], await waiting[1]] == ["unit", "unit/1"]
        await asyncio.sleep(0.05)
        assert not waiting[2].done()
        clock.now += 1.0
        assert await waiting[2] == "unit"
        assert pool.overloaded == 0


async def test_a_start_waiting_in_line_goes_ahead_when_its_patience_ends(
    broker: LocalBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each start in line waits no longer than its own patience, then goes over a share."""
    monkeypatch.setattr(pool_module, "ASSIGN_PATIENCE_SECS", 0.2)
    clock = Clock()
    async with full_small_pool(broker, clock) as pool:
        line = asyncio.gather(*(pool.reserve(new_txn_id()) for _ in range(3)))
        await asyncio.sleep(0.05)
        clock.now += 0.2  # their patience is over; not the second's window
        given = await asyncio.wait_for(line, 5)
        assert set(given) <= {"unit", "unit/1"} and pool.overloaded == 3


async def test_a_start_waits_as_long_as_its_request_may_rather_than_the_pools_patience(
    broker: LocalBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start whose request can wait longer than the pool's own patience waits for room
    that long: past the configured peak, starts are spread, not their completions bunched."""
    monkeypatch.setattr(pool_module, "ASSIGN_PATIENCE_SECS", 0.05)
    clock = Clock()
    async with full_small_pool(broker, clock) as pool:
        start = asyncio.ensure_future(pool.reserve(new_txn_id(), patience=30.0))
        await asyncio.sleep(0.2)  # four times the pool's own patience
        assert not start.done()
        clock.now += 1.0
        assert await start == "unit"
        assert pool.overloaded == 0


async def test_with_no_connection_subscribed_a_start_does_not_wait(broker: LocalBroker) -> None:
    registry, clock = Registry(max_held=10), Clock()
    async with small_pool(broker, registry, clock) as pool:
        await eventually(lambda: pool.connected)
        await broker.stop()
        await eventually(lambda: not pool.connected)
        given = [await pool.reserve(new_txn_id()) for _ in range(3)]
        assert given == ["unit"] * 3  # the queue and the sweeps answer these


async def test_a_connection_s_executions_are_paced_over_its_second(broker: LocalBroker) -> None:
    """Given at most a tenth of its share at once: a burst of starts would come back as a
    burst of completions, which IoT Core counts over any one second."""
    registry, clock = Registry(max_held=100), Clock()
    async with pool_for(broker, registry, clock, peak=80, pace_burst_secs=0.1) as pool:
        await eventually(lambda: pool.connected)
        [connection] = pool.connections
        given = [pool.assign(new_txn_id()) for _ in range(8)]
        assert given == ["unit"] * 8 and pool.overloaded == 0
        assert connection.room_in(clock(), pool.per_connection) > 0
        clock.now += 1 / pool.per_connection
        assert connection.room_in(clock(), pool.per_connection) == 0
        assert await pool.reserve(new_txn_id()) == "unit"
