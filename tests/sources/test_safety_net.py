"""While MQTT is healthy, a completion that never comes costs a hold or a sweep, not
forever: a workflow that never publishes, and has no status events, is still answered with
its final status, and a re-attach gives it afterwards."""

from __future__ import annotations

from typing import Any

import aiohttp

from notifier.app.state import LIVENESS, METRICS, MQTT, SAFETY_NET
from notifier.daemon import Daemon
from notifier.local.stack import LocalStack
from tests.support.daemons import DaemonFactory, call, until_ended
from tests.support.eventually import eventually


def aws_calls(daemon: Daemon, operation: str) -> float:
    labels = {"operation": operation}
    registry = daemon.app[METRICS].registry
    return registry.get_sample_value("notifier_aws_api_calls_total", labels) or 0.0


async def quiet(
    http: aiohttp.ClientSession, daemon: Daemon, wait_seconds: int, hold: float
) -> tuple[int, dict[str, Any]]:
    """A workflow that publishes nothing, and has no status events, held ``hold`` s."""
    status, _, body = await call(
        http,
        "POST",
        f"{daemon.url}/quiet",
        json={"waitSeconds": wait_seconds, "n": 1},
        headers={"Prefer": f"wait={hold:g}"},
    )
    return status, body


async def test_a_silent_workflow_is_answered_at_the_hold_deadline(
    daemon_factory: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon_factory() as daemon:
        assert daemon.app[MQTT].connected
        status, body = await quiet(http, daemon, wait_seconds=1, hold=4)
        assert (status, body["status"], body["completedVia"]) == (200, "SUCCEEDED", "poll")
        assert body["output"]["n"] == 1
        assert daemon.app[SAFETY_NET].found["deadline"] == 1
        assert aws_calls(daemon, "DescribeExecution") == 1
        # Re-attach gives it, from what the daemon remembers.
        status, _, again = await call(
            http, "GET", f"{daemon.url}/executions/{body['transactionId']}?wait=5"
        )
        assert (status, again["status"], again["output"]) == (200, "SUCCEEDED", body["output"])
        assert aws_calls(daemon, "DescribeExecution") == 1
        # A workflow that never publishes says nothing about MQTT: the check of its history
        # shows that, and MQTT stays trusted.
        liveness = daemon.app[LIVENESS]
        await eventually(lambda: liveness.checked == 1)
        assert liveness.missed == 0 and liveness.problem is None
        assert aws_calls(daemon, "GetExecutionHistory") == 1
        status, _, ready = await call(http, "GET", f"{daemon.url}/readyz")
        assert ready["state"] == "ready" and ready["mqttMissed"] == 0


async def test_after_a_202_a_reattach_asks_and_gives_the_final_status(
    stack: LocalStack, daemon_factory: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon_factory(NOTIFIER_DAEMON_SWEEP_AFTER="1") as daemon:
        status, body = await quiet(http, daemon, wait_seconds=2, hold=0.5)
        assert (status, body["status"]) == (202, "RUNNING")  # asked once more at the deadline
        txn = daemon.registry.get(body["transactionId"])
        assert txn is not None and txn.completion is None
        await until_ended(stack, [txn.execution_arn])  # nothing tells this daemon
        assert txn.completion is None
        status, _, again = await call(http, "GET", f"{daemon.url}{body['location']}?wait=30")
        assert (status, again["status"], again["completedVia"]) == (200, "SUCCEEDED", "poll")
        assert daemon.app[SAFETY_NET].found["reattach"] == 1


async def test_the_slow_sweep_answers_a_long_hold(
    daemon_factory: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon_factory(
        NOTIFIER_DAEMON_SWEEP_INTERVAL="0.5", NOTIFIER_DAEMON_SWEEP_AFTER="1"
    ) as daemon:
        status, body = await quiet(http, daemon, wait_seconds=1, hold=110)
        assert (status, body["status"], body["completedVia"]) == (200, "SUCCEEDED", "poll")
        assert daemon.app[SAFETY_NET].found == {"sweep": 1}


async def test_while_completions_arrive_nothing_is_asked(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    before = aws_calls(daemon, "DescribeExecution")
    for n in range(5):
        status, _, body = await call(
            http, "POST", f"{daemon.url}/hello", json={"n": n}, headers={"Prefer": "wait=60"}
        )
        assert (status, body["completedVia"]) == (200, "mqtt")
    assert aws_calls(daemon, "DescribeExecution") == before
