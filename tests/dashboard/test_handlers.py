"""The dashboard's endpoints on the application, with a fake Executions and approval inbox:
approvals listed and decided, an execution's details, the event stream's first events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from notifier.apikeys import hash_key, new_key
from notifier.aws.errors import AwsError
from notifier.config import ApiKeySettings
from notifier.requests.ids import new_txn_id
from notifier.requests.waiters import Status
from tests.support.executions import INSTANCE
from tests.support.http_app import Served, answer, serving, settings


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serving() as running:
        yield running



async def test_without_an_approval_queue_there_is_nothing_to_decide(served: Served) -> None:
    status, _, body = await answer(await served.client.get("/approvals"))
    assert (status, body) == (200, {"approvals": [], "enabled": False})
    status, _, body = await answer(
        await served.client.post("/approvals/x", json={"approved": True})
    )
    assert status == 404
    assert "approval_queue_url" in body["message"]


async def test_deciding_an_approval() -> None:
    async with serving(inbox=True) as served:
        assert served.inbox is not None
        approval = served.inbox.add("a1")
        status, _, body = await answer(await served.client.get("/approvals"))
        assert (status, body["enabled"]) == (200, True)
        assert body["approvals"] == [approval.to_json()]
        assert "secret-token" not in json.dumps(body)
        url = "/approvals/a1"
        for bad in ([True], {"approved": "yes"}, {"approved": True, "comment": 3}):
            status, _, _ = await answer(await served.client.post(url, json=bad))
            assert status == 400, bad
        long = {"approved": True, "comment": "x" * 1001}
        assert (await answer(await served.client.post(url, json=long)))[0] == 400
        assert served.inbox.pending() == [approval]
        served.inbox.failure = AwsError("SendTaskSuccess", "AccessDenied", "no")
        status, _, body = await answer(await served.client.post(url, json={"approved": True}))
        assert (status, body["awsErrorCode"]) == (502, "AccessDenied")
        served.inbox.failure = None
        status, _, body = await answer(
            await served.client.post(url, json={"approved": False, "comment": "no"})
        )
        assert (status, body) == (200, {"id": "a1", "decision": "rejected"})
        status, _, body = await answer(await served.client.post(url, json={"approved": True}))
        assert (status, body["decision"]) == (409, "rejected")
        status, _, _ = await answer(
            await served.client.post("/approvals/nope", json={"approved": True})
        )
        assert status == 404


async def test_a_decision_names_the_api_key_that_made_it() -> None:
    key = new_key()
    config = settings(
        api_keys={"alice": ApiKeySettings(sha256=hash_key(key), roles=("approver",))}
    )
    async with serving(config, inbox=True) as served:
        assert served.inbox is not None
        served.inbox.add("a1")
        status, _, _ = await answer(
            await served.client.post(
                "/approvals/a1", json={"approved": False}, headers={"x-api-key": key}
            )
        )
        assert status == 200
        assert served.inbox.decided_by == {"a1": "alice"}


async def test_details_of_an_execution_of_a_route(served: Served) -> None:
    txn_id = new_txn_id()
    arn = served.executions.ran_elsewhere(txn_id, Status.SUCCEEDED, output='{"a": 1}')
    status, _, body = await answer(
        await served.client.get("/dashboard/details", params={"arn": arn})
    )
    assert status == 200
    assert (body["route"], body["status"], body["output"]) == ("hello", "SUCCEEDED", {"a": 1})
    assert body["history"][0]["type"] == "ExecutionStarted"
    status, _, body = await answer(await served.client.get("/dashboard/details"))
    assert status == 400
    assert "arn" in body["message"]
    for unknown in (f"{arn[: -len(txn_id)]}no-such-execution", arn.replace("Hello", "Other")):
        status, _, _ = await answer(
            await served.client.get("/dashboard/details", params={"arn": unknown})
        )
        assert status == 404, unknown
    served.executions.failures["DescribeExecution"] = AwsError(
        "DescribeExecution", "ThrottlingException", "slow down"
    )
    status, headers, body = await answer(
        await served.client.get("/dashboard/details", params={"arn": arn})
    )
    assert (status, body["awsErrorCode"], headers["Retry-After"]) == (
        503, "ThrottlingException", "5",
    )  # fmt: skip


async def test_the_event_stream_says_hello_first(served: Served) -> None:
    async with served.client.get("/events") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        lines = []
        async with asyncio.timeout(10):
            while (line := (await response.content.readline()).decode()) != "\n":
                lines.append(line.strip())
    assert lines[:2] == ["retry: 2000", "event: hello"]
    hello = json.loads(lines[2].removeprefix("data: "))
    assert hello == {
        "instanceId": INSTANCE,
        "routes": ["hello", "p1"],
        "approvals": False,
        "statusFeed": False,
    }
