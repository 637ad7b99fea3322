"""Workflows that end without publishing their completion still answer the held request,
through the status forwarder (MQTT or the instance's queue), with no DescribeExecution."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from notifier.app.state import RECONCILER
from notifier.aws.clients import AwsClients
from notifier.daemon import Daemon
from notifier.requests.waiters import Transaction
from tests.support.daemons import call
from tests.support.eventually import eventually

LONG = {"Prefer": "wait=60"}


@pytest.mark.parametrize(
    ("route", "payload", "status", "answer"),
    [
        ("silent", {"waitSeconds": 0, "fail": True}, "FAILED", 502),  # a crashed Lambda
        ("silent-timeout", {}, "TIMED_OUT", 504),  # TimeoutSeconds reached
    ],
)
async def test_crash_and_timeout(
    daemon: Daemon,
    http: aiohttp.ClientSession,
    route: str,
    payload: dict[str, Any],
    status: str,
    answer: int,
) -> None:
    code, _, body = await call(http, "POST", f"{daemon.url}/{route}", json=payload, headers=LONG)
    assert (code, body["status"]) == (answer, status), body
    assert body["completedVia"] in ("mqtt", "sqs")
    assert daemon.app[RECONCILER].calls == 0


async def test_stop_execution_from_outside(daemon: Daemon, http: aiohttp.ClientSession) -> None:
    request = asyncio.ensure_future(
        call(http, "POST", f"{daemon.url}/hello", json={"waitSeconds": 30}, headers=LONG)
    )

    def started() -> list[Transaction]:
        return [t for t in daemon.registry.unresolved() if t.route == "hello" and t.started_at]

    await eventually(lambda: len(started()) == 1)
    (txn,) = started()
    async with AwsClients(daemon.aws).client("stepfunctions") as sfn:
        await sfn.stop_execution(executionArn=txn.execution_arn, error="Operator", cause="outside")
    code, _, body = await request
    assert (code, body["status"]) == (409, "ABORTED"), body
    assert body["completedVia"] in ("mqtt", "sqs")
