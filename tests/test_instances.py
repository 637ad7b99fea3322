"""Three daemons, each a process of its own with its own instance id, behind a real HAProxy
(config/haproxy.cfg) on one local stack: clients with Idempotency-Keys lose nothing, and
start nothing twice, when a daemon holding their requests is SIGKILLed; an approval decided
through the balancer takes effect once."""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from notifier.bench.daemon_process import DaemonProcess
from notifier.local.stack import LocalStack
from notifier.requests.ids import keyed_txn_id
from tests.support.balancer import HAProxy
from tests.support.daemons import call, settings_for
from tests.support.eventually import EVENTUALLY, eventually

CLIENTS = 100
HELLO_WAIT = 2
"""Seconds each client's workflow waits: long enough that many are held at the kill."""
HELD_AT_THE_KILL = 5
"""Requests the victim holds when it is killed whose executions it started, at least."""
RETRY_PAUSE = 0.2


@dataclass
class Client:
    index: int
    key: str
    attempts: int = 0
    cut_off: int = 0
    """Requests of it that failed (the balancer's 502 or 503, a closed connection)."""
    cut_off_at: float | None = None
    """When a request of it first failed."""
    answered_at: float | None = None
    answer: Any = None


@dataclass
class Instances:
    daemons: list[DaemonProcess]
    balancer: HAProxy


@pytest.fixture
async def instances(stack: LocalStack, tmp_path: Path) -> AsyncIterator[Instances]:
    run = secrets.token_hex(3)
    async with AsyncExitStack() as exits:
        daemons = []
        for name in ("a", "b", "c"):
            log = exits.enter_context((tmp_path / f"daemon-{name}.log").open("wb"))
            settings = settings_for(
                stack, approvals=True, NOTIFIER_DAEMON_INSTANCE_ID=f"lb-{name}-{run}"
            )
            daemons.append(DaemonProcess(settings, log))
        await asyncio.gather(*(exits.enter_async_context(d) for d in daemons))
        servers = {f"notifier-{name}": d.port for name, d in zip("abc", daemons, strict=True)}
        balancer = await exits.enter_async_context(HAProxy(servers, tmp_path))
        yield Instances(daemons, balancer)


async def keep_trying(http: aiohttp.ClientSession, url: str, client: Client, run: str) -> None:
    """POST until the final answer, retrying with the same key whatever cut it off."""
    body = {"client": client.index, "run": run, "waitSeconds": HELLO_WAIT}
    headers = {"Idempotency-Key": client.key, "Prefer": "wait=60"}
    async with asyncio.timeout(EVENTUALLY):
        while True:
            client.attempts += 1
            try:
                async with http.post(f"{url}/hello", json=body, headers=headers) as response:
                    status, text = response.status, await response.text()
            except aiohttp.ClientError:
                status, text = 0, ""
            if status == 200:
                client.answered_at, client.answer = time.monotonic(), json.loads(text)
                return
            assert status in (0, 202, 502, 503), (status, text)
            if status != 202:
                client.cut_off += 1
                client.cut_off_at = client.cut_off_at or time.monotonic()
            await asyncio.sleep(RETRY_PAUSE)


async def holding_started(http: aiohttp.ClientSession, daemon: DaemonProcess) -> int:
    """Requests ``daemon`` holds whose executions it started, at least: the fewer of the
    requests it holds and the StartExecution calls it made."""
    _, _, body = await call(http, "GET", f"{daemon.url}/readyz")
    async with http.get(f"{daemon.url}/metrics") as response:
        metrics = await response.text()
    starts = 0.0
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "notifier_aws_api_calls_total" and sample.labels == {
                "operation": "StartExecution"
            }:
                starts = sample.value
    return min(int(body["held"]), int(starts))


async def test_a_sigkilled_instance_costs_its_clients_one_retry_and_no_duplicate_work(
    instances: Instances, stack: LocalStack, http: aiohttp.ClientSession
) -> None:
    run = secrets.token_hex(4)
    url = instances.balancer.url
    started = datetime.now(UTC)
    clients = [Client(i, f"{run}-{i}") for i in range(CLIENTS)]
    requests = [asyncio.ensure_future(keep_trying(http, url, c, run)) for c in clients]
    victim = instances.daemons[1]
    async with asyncio.timeout(EVENTUALLY):
        while await holding_started(http, victim) < HELD_AT_THE_KILL:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    await victim.kill()
    killed_at = time.monotonic()
    await asyncio.gather(*requests)

    # Every client has its own workflow's answer, under the transaction its key names.
    for client in clients:
        answer = client.answer
        assert answer["transactionId"] == keyed_txn_id("hello", client.key, None)
        assert answer["status"] == "SUCCEEDED"
        assert (answer["output"]["client"], answer["output"]["run"]) == (client.index, run)
    cut_off = [c for c in clients if c.cut_off_at is not None]
    assert len(cut_off) >= HELD_AT_THE_KILL, "the killed instance's clients were cut off"
    # The kill cost each of them one retry: the retry was answered.
    assert [c.cut_off for c in cut_off] == [1] * len(cut_off)
    # The killed instance's own executions, whose completions were published to it, were
    # found by the instances that took the retries, by asking Step Functions.
    vias = Counter(c.answer["completedVia"] for c in cut_off)
    assert vias["poll"] >= 1, vias
    # One execution per key, and no other: Step Functions' own list...
    names = await executions_of_run(stack, started, run)
    keyed = sorted(c.answer["transactionId"] for c in clients)
    assert sorted(names) == keyed
    # ...and the daemons' listing, through the balancer.
    listed = await listed_since(http, url, started)
    assert sorted(name for name in listed if name in keyed) == keyed
    # Any instance re-attaches to a transaction the killed one started, by id or by key.
    for client in cut_off[:2]:
        txn_id = client.answer["transactionId"]
        for daemon in (d for d in instances.daemons if d is not victim):
            status, _, body = await call(http, "GET", f"{daemon.url}/executions/{txn_id}")
            assert (status, body["output"]) == (200, client.answer["output"])
        headers = {"Idempotency-Key": client.key}
        status, _, body = await call(http, "GET", f"{url}/hello", headers=headers)
        assert (status, body["transactionId"]) == (200, txn_id)

    after_kill = [c.answered_at - killed_at for c in cut_off if c.answered_at is not None]
    after_end = [c.answer["timings"]["durationsMs"]["stoppedToAnswered"] / 1000 for c in cut_off]
    retries = sum(c.attempts - 1 for c in clients)
    print(
        f"\n3 instances behind HAProxy, one SIGKILLed holding {HELD_AT_THE_KILL}+ requests"
        " of executions it started:"
        f" {CLIENTS} clients, {len(cut_off)} cut off, {retries} retries,"
        f" {len(names)} executions, {sum(c.answer is not None for c in clients)} answers;"
        f" the cut-off clients answered {statistics.median(after_kill):.1f} s (median),"
        f" {max(after_kill):.1f} s (last) after the kill, and"
        f" {statistics.median(after_end):.2f} s (median), {max(after_end):.2f} s (max)"
        " after their workflow ended, through "
        + ", ".join(f"{via} {count}" for via, count in sorted(vias.items()))
    )


async def listed_since(http: aiohttp.ClientSession, url: str, since: datetime) -> list[str]:
    """Names of the Hello executions ``GET /executions`` lists, newest first, back to
    ``since``."""
    names: list[str] = []
    params = {"route": "hello", "limit": "100"}
    while True:
        status, _, page = await call(http, "GET", f"{url}/executions", params=params)
        assert status == 200, page
        for item in page["executions"]:
            if datetime.fromisoformat(item["startDate"]) < since:
                return names
            names.append(item["name"])
        if page["nextToken"] is None:
            return names
        params["nextToken"] = page["nextToken"]


async def executions_of_run(stack: LocalStack, since: datetime, run: str) -> list[str]:
    """Names of the Hello executions started since ``since`` for the clients of ``run``."""
    machine = stack.outputs["HelloStateMachineArn"]
    names = []
    async with stack.aws().client("stepfunctions") as sfn:
        paginator = sfn.get_paginator("list_executions")
        async for page in paginator.paginate(stateMachineArn=machine):
            for item in page["executions"]:
                if item["startDate"] < since:
                    continue
                described = await sfn.describe_execution(executionArn=item["executionArn"])
                if json.loads(described["input"]).get("run") == run:
                    names.append(item["name"])
    return names


async def test_an_approval_through_the_balancer_takes_effect_once(
    instances: Instances, stack: LocalStack, http: aiohttp.ClientSession
) -> None:
    url = instances.balancer.url
    key = f"archive-{secrets.token_hex(4)}"
    name = keyed_txn_id("archive", key, None)
    body = {"approval_needed": True, "archive": True, "quality": 90}
    archive = asyncio.ensure_future(
        call(
            http,
            "POST",
            f"{url}/archive",
            json=body,
            headers={"Idempotency-Key": key, "Prefer": "wait=60"},
        )
    )
    approval: dict[str, Any] = {}

    async def listed() -> bool:
        _, _, listing = await call(http, "GET", f"{url}/approvals")
        found = [a for a in listing["approvals"] if a["executionName"] == name]
        approval.update(found[0] if found else {})
        return bool(found)

    await eventually(listed, interval=0.1)
    # Every instance lists it, whichever holds the request.
    for daemon in instances.daemons:
        _, _, listing = await call(http, "GET", f"{daemon.url}/approvals")
        assert approval["id"] in [a["id"] for a in listing["approvals"]]
    decide = f"{url}/approvals/{approval['id']}"
    decisions = await asyncio.gather(
        *(call(http, "POST", decide, json={"approved": True, "comment": str(i)}) for i in range(3))
    )
    assert sorted(status for status, _, _ in decisions) == [200, 409, 409]
    status, _, answer = await archive
    assert (status, answer["output"]["action"]) == (200, "Archived")
    [comment] = [str(i) for i, (code, _, _) in enumerate(decisions) if code == 200]
    assert answer["output"]["approval"] == {"approved": True, "comment": comment}
    async with stack.aws().client("dynamodb") as dynamodb:
        record = await dynamodb.get_item(
            TableName=stack.outputs["ArchiveResultsTableName"], Key={"Id": {"S": name}}
        )
    assert record["Item"]["Action"] == {"S": "Archived"}
    await eventually(lambda: archive.done())
