"""The dashboard's endpoints against the local stack: the page, the event stream, execution
details and human approvals."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from notifier.daemon import Daemon
from notifier.dashboard.web import INBOX, STATUS_FEED
from notifier.local.stack import LocalStack
from tests.support.daemons import DaemonFactory, call
from tests.support.eventually import EVENTUALLY, eventually


class EventStream:
    """The events of one open ``/events`` response, in order."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.raw: list[str] = []

    async def next(self) -> tuple[str, Any]:
        kind, data = "message", []
        async with asyncio.timeout(EVENTUALLY):
            while True:
                line = (await self.response.content.readline()).decode()
                if not line:
                    raise EOFError("the stream ended")
                self.raw.append(line)
                line = line.rstrip("\n")
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and data:
                    return kind, json.loads("\n".join(data))

    async def until(self, kind: str, predicate: Any = lambda data: True) -> Any:
        async with asyncio.timeout(EVENTUALLY):
            while True:
                got, data = await self.next()
                if got == kind and predicate(data):
                    return data


@asynccontextmanager
async def events(
    http: aiohttp.ClientSession, daemon: Daemon, **headers: str
) -> AsyncIterator[EventStream]:
    async with http.get(f"{daemon.url}/events", headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        yield EventStream(response)


def execution_event(name: str, status: str) -> Any:
    return lambda data: data["name"] == name and data["status"] == status


async def test_the_page_and_its_assets_are_served_by_the_daemon(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{daemon.url}/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
    assets = ["/dashboard/static/dashboard.js", "/dashboard/static/dashboard.css"]
    for asset in assets:
        assert asset in page
        async with http.get(f"{daemon.url}{asset}") as response:
            assert response.status == 200, asset
            assert len(await response.read()) > 1000
    # nothing from elsewhere: the page works offline
    assert "http://" not in page and "https://" not in page


async def test_executions_appear_when_started_and_update_until_they_end(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    async with events(http, daemon) as stream:
        hello = await stream.until("hello")
        assert hello["instanceId"] == daemon.instance_id
        assert "hello" in hello["routes"]
        assert hello["statusFeed"] is True
        await stream.until("snapshot")
        await eventually(lambda: daemon.app[STATUS_FEED].connected)
        post = asyncio.ensure_future(
            call(http, "POST", f"{daemon.url}/hello", json={"waitSeconds": 1})
        )
        started = await stream.until("execution", lambda d: d["route"] == "hello")
        name = started["name"]
        assert started["status"] == "RUNNING"
        running = await stream.until(
            "execution", lambda d: d["name"] == name and d["startDate"] is not None
        )
        assert running["stateMachine"].endswith("-Hello")
        status, _, body = await post
        assert status == 200 and body["transactionId"] == name
        ended = await stream.until("execution", execution_event(name, "SUCCEEDED"))
        assert ended["completedVia"] == "mqtt"
        assert ended["stopDate"] >= ended["startDate"]
        assert ended["durationMs"] == ended["stopDate"] - ended["startDate"]

    async with events(http, daemon) as stream:  # a new page sees it in the snapshot
        snapshot = await stream.until("snapshot")
        assert [e["status"] for e in snapshot if e["name"] == name] == ["SUCCEEDED"]


async def test_executions_started_elsewhere_appear_from_the_status_topics(
    daemon: Daemon, stack: LocalStack, http: aiohttp.ClientSession
) -> None:
    async with events(http, daemon) as stream:
        await stream.until("snapshot")
        await eventually(lambda: daemon.app[STATUS_FEED].connected)
        name = f"elsewhere-{secrets.token_hex(4)}"
        async with stack.aws().client("stepfunctions") as sfn:
            await sfn.start_execution(
                stateMachineArn=stack.outputs["HelloStateMachineArn"],
                name=name,
                input=json.dumps({"subtopic": "someone-else", "waitSeconds": 0}),
            )
        await stream.until("execution", execution_event(name, "RUNNING"))
        ended = await stream.until("execution", execution_event(name, "SUCCEEDED"))
    assert ended["route"] is None and ended["completedVia"] is None
    assert ended["durationMs"] is not None
    status, _, details = await call(
        http, "GET", f"{daemon.url}/dashboard/details", params={"arn": ended["executionArn"]}
    )
    assert status == 200
    assert details["input"] == {"subtopic": "someone-else", "waitSeconds": 0}
    assert "processData" not in details  # a body route has none


async def test_details_show_input_process_data_output_and_the_steps(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    status, _, answer = await call(http, "POST", f"{daemon.url}/p1", json={"foo": "detail"})
    assert status == 200
    arn = answer["executionArn"]
    status, _, details = await call(
        http, "GET", f"{daemon.url}/dashboard/details", params={"arn": arn}
    )
    assert status == 200
    assert details["status"] == "SUCCEEDED" and details["route"] == "p1"
    assert details["input"]["processData"] == answer["transactionId"]
    assert details["processData"] == answer["processData"]
    assert details["output"] == answer["output"]
    types = [event["type"] for event in details["history"]]
    assert types[0] == "ExecutionStarted" and types[-1] == "ExecutionSucceeded"
    entered = [e["details"]["name"] for e in details["history"] if e["type"].endswith("Entered")]
    assert {"StepA", "StepF"} <= set(entered), entered
    assert details["historyTruncated"] is False


async def test_details_of_a_failed_execution_carry_error_and_cause(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    status, _, answer = await call(http, "POST", f"{daemon.url}/p1", json={"fail": "step-c"})
    assert status == 502
    status, _, details = await call(
        http, "GET", f"{daemon.url}/dashboard/details", params={"arn": answer["executionArn"]}
    )
    assert status == 200
    assert details["status"] == "FAILED"
    assert (details["error"], details["cause"]) == (answer["error"], answer["cause"])
    assert details["output"] is None
    assert "step-b-output" in details["processData"]
    assert details["history"][-1]["type"] == "ExecutionFailed"


async def pending_approval(
    http: aiohttp.ClientSession, daemon: Daemon, execution_name: str
) -> dict[str, Any]:
    async def found() -> list[dict[str, Any]]:
        _, _, body = await call(http, "GET", f"{daemon.url}/approvals")
        return [a for a in body["approvals"] if a["executionName"] == execution_name]

    return (await eventually(found, interval=0.1))[0]


Held = asyncio.Future[tuple[int, dict[str, Any], Any]]


async def archive_awaiting_approval(
    http: aiohttp.ClientSession, daemon: Daemon
) -> tuple[Held, str, dict[str, Any]]:
    """POST /archive needing approval: the held request, the execution's name, and its
    pending approval as ``GET /approvals`` lists it."""
    body = {"approval_needed": True, "archive": True, "quality": 70}
    held = asyncio.ensure_future(call(http, "POST", f"{daemon.url}/archive", json=body))
    await eventually(lambda: daemon.registry.held > 0)
    [txn] = list(daemon.registry.unresolved())
    return held, txn.txn_id, await pending_approval(http, daemon, txn.txn_id)


async def test_approving_completes_the_held_request_and_a_second_decision_is_refused(
    daemon_factory: DaemonFactory, stack: LocalStack, http: aiohttp.ClientSession
) -> None:
    async with daemon_factory(approvals=True) as daemon, events(http, daemon) as stream:
        held, name, approval = await archive_awaiting_approval(http, daemon)
        assert approval["file"]["Quality"] == 70
        listed = await stream.until(
            "approvals", lambda d: any(a["id"] == approval["id"] for a in d)
        )
        url = f"{daemon.url}/approvals/{approval['id']}"

        status, _, body = await call(http, "POST", url, json={"approved": True, "comment": "fine"})
        assert (status, body) == (200, {"id": approval["id"], "decision": "approved"})
        status, _, answer = await held
        assert status == 200
        assert answer["output"]["action"] == "Archived"
        assert answer["output"]["approval"] == {"approved": True, "comment": "fine"}

        status, _, body = await call(http, "POST", url, json={"approved": False})
        assert status == 409 and body["decision"] == "approved"
        await stream.until("approvals", lambda d: all(a["id"] != approval["id"] for a in d))
        _, _, body = await call(http, "GET", f"{daemon.url}/approvals")
        assert approval["id"] not in [a["id"] for a in body["approvals"]]
        details = await call(
            http, "GET", f"{daemon.url}/dashboard/details", params={"arn": answer["executionArn"]}
        )
    # The task token is nowhere in what the daemon showed.
    token = await task_token(stack, answer["executionArn"])
    assert token not in json.dumps([listed, approval, details, stream.raw])
    assert "(redacted)" in json.dumps(details)


async def task_token(stack: LocalStack, execution_arn: str) -> str:
    """The token the execution's approval request carried, from Step Functions itself."""
    async with stack.aws().client("stepfunctions") as sfn:
        history = await sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)
    [scheduled] = [
        e["taskScheduledEventDetails"]
        for e in history["events"]
        if e["type"] == "TaskScheduled"
        and e["taskScheduledEventDetails"]["resource"] == "sendMessage.waitForTaskToken"
    ]
    parameters = json.loads(scheduled["parameters"])
    token = parameters["MessageBody"]["TaskToken"]
    assert isinstance(token, str) and len(token) > 10
    return token


async def test_rejecting_runs_the_workflow_s_rejected_branch_which_records_it(
    daemon_factory: DaemonFactory, stack: LocalStack, http: aiohttp.ClientSession
) -> None:
    async with daemon_factory(approvals=True) as daemon, daemon_factory(approvals=True) as other:
        held, name, approval = await archive_awaiting_approval(http, daemon)
        # Two people decide at once, at two instances: one decision is taken, the other
        # refused.
        rejection = {"approved": False, "comment": "wrong file"}
        decisions = await asyncio.gather(
            *(
                call(http, "POST", f"{d.url}/approvals/{approval['id']}", json=rejection)
                for d in (daemon, other)
            )
        )
        status, _, answer = await held
    assert sorted(status for status, _, _ in decisions) == [200, 409]
    assert [body["decision"] for status, _, body in decisions if status == 200] == ["rejected"]
    # The held request gets the workflow's own answer: it took its Rejected branch.
    assert (status, answer["status"]) == (200, "SUCCEEDED")
    assert answer["output"]["action"] == "Rejected"
    assert answer["output"]["approval"] == {"approved": False, "comment": "wrong file"}
    async with stack.aws().client("dynamodb") as dynamodb:
        record = await dynamodb.get_item(
            TableName=stack.outputs["ArchiveResultsTableName"], Key={"Id": {"S": name}}
        )
        decided = await dynamodb.get_item(
            TableName=stack.outputs["ApprovalTableName"], Key={"Id": {"S": approval["id"]}}
        )
    assert record["Item"]["Action"] == {"S": "Rejected"}
    assert decided["Item"]["Outcome"] == {"S": "rejected"}
    assert decided["Item"]["DecisionComment"] == {"S": "wrong file"}
    assert "Pending" not in decided["Item"]


async def test_a_pending_request_survives_a_restart_of_the_daemon(
    daemon_factory: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon_factory(approvals=True) as first:
        body = {"approval_needed": True, "archive": False}
        status, _, answer = await call(
            http, "POST", f"{first.url}/archive", json=body, headers={"Prefer": "wait=0"}
        )
        assert status == 202
        before = await pending_approval(http, first, answer["transactionId"])
    async with daemon_factory(approvals=True) as second:
        after = await pending_approval(http, second, answer["transactionId"])
        assert after["id"] == before["id"]
        status, _, _ = await call(
            http, "POST", f"{second.url}/approvals/{after['id']}", json={"approved": True}
        )
        assert status == 200
        status, _, final = await call(
            http, "GET", f"{second.url}/executions/{answer['transactionId']}"
        )
    assert status == 200 and final["output"]["action"] == "Unarchivable"


async def test_garbage_on_the_approval_queue_is_skipped_and_left_there(
    daemon_factory: DaemonFactory, stack: LocalStack, http: aiohttp.ClientSession
) -> None:
    queue = stack.outputs["ApprovalQueueUrl"]
    async with stack.aws().client("sqs") as sqs:

        async def hidden() -> int:
            attributes = await sqs.get_queue_attributes(
                QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
            )
            return int(attributes["Attributes"]["ApproximateNumberOfMessagesNotVisible"])

        before = await hidden()
        for garbage in ("not json", "[1]", json.dumps({"ExecutionArn": "a"})):
            await sqs.send_message(QueueUrl=queue, MessageBody=garbage)
        async with daemon_factory(approvals=True) as daemon:
            inbox = daemon.app[INBOX]
            await eventually(lambda: inbox.skipped == 3)
            held, name, approval = await archive_awaiting_approval(http, daemon)
            _, _, listed = await call(http, "GET", f"{daemon.url}/approvals")
            assert name in [a["executionName"] for a in listed["approvals"]]
            assert inbox.skipped == 3
            await call(
                http, "POST", f"{daemon.url}/approvals/{approval['id']}", json={"approved": True}
            )
            assert (await held)[0] == 200
        assert await hidden() == before + 3


async def test_a_request_whose_execution_ended_is_dropped(
    daemon_factory: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon_factory(approvals=True) as daemon:
        held, name, approval = await archive_awaiting_approval(http, daemon)
        status, _, _ = await call(http, "POST", f"{daemon.url}/executions/{name}/stop")
        assert status == 200
        assert (await held)[0] == 409
        inbox = daemon.app[INBOX]
        await eventually(lambda: approval["id"] not in [a.id for a in inbox.pending()])
        status, _, body = await call(
            http, "POST", f"{daemon.url}/approvals/{approval['id']}", json={"approved": True}
        )
    assert status == 409 and "ABORTED" in body["message"]


async def test_open_streams_end_when_the_daemon_stops(
    daemon_factory: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon_factory() as daemon:
        response = await http.get(f"{daemon.url}/events")
        stream = EventStream(response)
        await stream.until("approvals")
    try:
        async with asyncio.timeout(EVENTUALLY):
            assert await response.content.read() == b""
    finally:
        response.release()
