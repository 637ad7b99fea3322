"""The MQTT broker goes away while requests are held, or is not there at start: every held
request still gets its own final status, exactly once, from DescribeExecution sweeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from notifier.app import wiring
from notifier.app.state import METRICS, MQTT, RECONCILER
from notifier.daemon import Daemon
from notifier.local.settings import PUBLISHER_CLIENT_ID
from notifier.local.stack import LocalStack
from tests.support.busy_loop import busy_event_loop
from tests.support.daemons import DaemonFactory, call, until_ended
from tests.support.eventually import eventually
from tests.support.mqtt import MqttRecorder, connected

HELD = 200
LONG = {"Prefer": "wait=110"}


@pytest.fixture
async def broker(stack: LocalStack, daemon: Daemon, other_daemon: Daemon) -> AsyncIterator[Any]:
    """The stack's broker, for the test to stop and start; running again afterwards, with the
    session's daemons, and the workflows' publisher if it was, connected to it again."""
    publishing = publisher_connected(stack)
    yield stack.broker
    if not stack.broker.running:
        await stack.broker.start()
    for running in (daemon, other_daemon):
        await eventually(lambda running=running: running.app[MQTT].connected)
    if publishing:
        await eventually(lambda: publisher_connected(stack))


def publisher_connected(stack: LocalStack) -> bool:
    """Whether the stand-in for IoT Core's data plane, which publishes the workflows'
    completions as a client of the broker, is connected to it (it connects at its first
    publish, and after a restart of the broker within its reconnect backoff)."""
    return connected(stack.broker, PUBLISHER_CLIENT_ID)


def quiet(n: int, wait: float) -> dict[str, Any]:
    """Every third one fails; each output carries its own n."""
    return {"n": n, "waitSeconds": wait, **({"fail": True} if n % 3 == 0 else {})}


async def hold(
    http: aiohttp.ClientSession, daemon: Daemon, count: int, wait: float
) -> asyncio.Future[list[tuple[int, dict[str, Any]]]]:
    """``count`` requests to the quiet workflow, held once their executions have started."""

    async def one(n: int) -> tuple[int, dict[str, Any]]:
        status, _, body = await call(
            http, "POST", f"{daemon.url}/quiet", json=quiet(n, wait), headers=LONG
        )
        return status, body

    requests = asyncio.gather(*(one(n) for n in range(count)))
    await eventually(lambda: daemon.registry.held == count)
    await eventually(lambda: all(t.started_at is not None for t in daemon.registry.unresolved()))
    return requests


def held(daemon: Daemon) -> list[str]:
    """The executions of the requests ``daemon`` holds."""
    return [txn.execution_arn for txn in daemon.registry.unresolved()]


def assert_each_answered_once_with_its_own_status(
    results: list[tuple[int, dict[str, Any]]], daemon: Daemon
) -> None:
    assert len({body["transactionId"] for _, body in results}) == len(results)
    for n, (status, body) in enumerate(results):
        if n % 3 == 0:
            assert (status, body["status"], body["error"]) == (502, "FAILED", "Lambda.Unknown")
        else:
            assert (status, body["status"]) == (200, "SUCCEEDED"), body
            assert body["output"]["n"] == n
        assert body["completedVia"] == "poll"
    metrics = daemon.app[METRICS].registry
    resolved = metrics.get_sample_value("notifier_completions_total", {"source": "poll"})
    assert resolved == len(results)  # one resolution each: later ones were no-ops


async def test_chaos_the_broker_stops_while_held_executions_complete(
    daemon_factory: DaemonFactory, stack: LocalStack, broker: Any, http: aiohttp.ClientSession
) -> None:
    # Sweeps at twice the default read rate: two thirds of the stack's DescribeExecution
    # refill (15 a second), the rest left to until_ended's reads, which are not retried.
    async with daemon_factory(NOTIFIER_DAEMON_SFN_READ_RATE="10") as daemon:
        requests = await hold(http, daemon, HELD, wait=2)
        await broker.stop()
        await eventually(lambda: not daemon.app[MQTT].connected)
        status, _, ready = await call(http, "GET", f"{daemon.url}/readyz")
        assert status == 200 and ready["state"] == "degraded"
        await until_ended(stack, held(daemon))
        await broker.start()
        results = await requests
        await eventually(lambda: daemon.app[MQTT].connected)
        assert_each_answered_once_with_its_own_status(results, daemon)


async def test_one_sweep_after_the_broker_is_back_closes_the_gap(
    daemon_factory: DaemonFactory,
    stack: LocalStack,
    broker: Any,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wiring, "RECONCILE_MIN_INTERVAL", 600.0)  # no sweep while down
    async with daemon_factory() as daemon:
        requests = await hold(http, daemon, 20, wait=1)
        reconciler = daemon.app[RECONCILER]
        await broker.stop()
        await eventually(lambda: not daemon.app[MQTT].connected)
        await until_ended(stack, held(daemon))  # while MQTT is down
        assert daemon.registry.held == 20 and reconciler.calls == 0
        await broker.start()
        results = await requests
        assert reconciler.sweeps == 1 and reconciler.calls == 20
        assert_each_answered_once_with_its_own_status(results, daemon)


async def test_a_broker_unreachable_at_start(
    daemon_factory: DaemonFactory, stack: LocalStack, broker: Any, http: aiohttp.ClientSession
) -> None:
    publishing = publisher_connected(stack)
    await broker.stop()
    async with daemon_factory(NOTIFIER_MQTT_RECONNECT_MAX_SECS="1") as daemon:
        status, _, ready = await call(http, "GET", f"{daemon.url}/readyz")
        assert status == 200 and ready["state"] == "degraded" and not ready["mqttConnected"]
        status, _, body = await call(
            http, "POST", f"{daemon.url}/quiet", json=quiet(1, 0), headers=LONG
        )
        assert (status, body["completedVia"]) == (200, "poll")
        await broker.start()
        await eventually(lambda: daemon.app[MQTT].connected)
        status, _, ready = await call(http, "GET", f"{daemon.url}/readyz")
        assert status == 200 and ready["state"] == "ready"
        # A publish while the workflows' publisher is still reconnecting may time out, and
        # the status forwarder's completion then races MQTT's.
        await eventually(lambda: not publishing or publisher_connected(stack))
        status, _, body = await call(http, "POST", f"{daemon.url}/hello", json={}, headers=LONG)
        assert (status, body["completedVia"]) == (200, "mqtt")


async def test_after_a_stop_on_a_busy_event_loop_completions_come_by_mqtt_again(
    daemon: Daemon, stack: LocalStack, broker: Any, http: aiohttp.ClientSession
) -> None:
    """On a busy loop the stop takes seconds, longer than the workflows' publisher waits to
    reconnect once its connection is closed; it comes back to the broker started after."""
    status, _, body = await call(http, "POST", f"{daemon.url}/hello", json={}, headers=LONG)
    assert (status, body["completedVia"]) == (200, "mqtt")  # the publisher is connected
    later = [MqttRecorder(stack, f"busy-stop-{n}") for n in range(3)]  # stopped after it
    for recorder in later:
        await recorder.start()
    try:
        async with busy_event_loop():
            await broker.stop()
        await broker.start()
        await eventually(lambda: daemon.app[MQTT].connected)
        await eventually(lambda: publisher_connected(stack))
        status, _, body = await call(http, "POST", f"{daemon.url}/hello", json={}, headers=LONG)
        assert (status, body["completedVia"]) == (200, "mqtt")
    finally:
        for recorder in later:
            await recorder.stop()
