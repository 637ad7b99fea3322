"""The approval inbox: requests moved from the queue into the stack's approvals table, shared
by every instance and decided once, against the local stack's DynamoDB; its loops outlive
failing inner calls."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from botocore.exceptions import ClientError

from notifier.aws.errors import AwsError
from notifier.dashboard import approval_table, approvals
from notifier.dashboard.approval_table import ApprovalDecidedError, Decision
from notifier.dashboard.approvals import ApprovalInbox
from notifier.local.stack import LocalStack
from tests.local.test_workflows import take_message
from tests.support.eventually import eventually
from tests.support.sources import running_tasks


def request(name: str) -> dict[str, Any]:
    return {
        "TaskToken": f"token-{name}",
        "ExecutionArn": f"arn:aws:states:us-east-1:123456789012:execution:notifier-test:{name}",
        "ExecutionName": name,
        "File": {"name": "f"},
    }


class QueueWithOneRequest:
    """An approval queue holding one request; ReceiveMessage raises the first time."""

    def __init__(self, message_id: str) -> None:
        self.receives = 0
        self.deleted: list[str] = []
        body = json.dumps(request(message_id))
        self._messages = [{"MessageId": message_id, "ReceiptHandle": "r1", "Body": body}]

    async def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        self.receives += 1
        if self.receives == 1:
            raise RuntimeError("receiving broke")
        await asyncio.sleep(0.01)  # a long poll
        messages, self._messages = self._messages, []
        return {"Messages": messages}

    async def delete_message(self, **kwargs: Any) -> None:
        self.deleted.append(kwargs["ReceiptHandle"])


class StepFunctions:
    """Records SendTaskSuccess; raises ``failure`` when set."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.failure: Exception | None = None

    async def send_task_success(self, taskToken: str, output: str) -> None:  # noqa: N803
        await asyncio.sleep(0.01)
        if self.failure is not None:
            raise self.failure
        self.sent.append((taskToken, json.loads(output)))


@asynccontextmanager
async def inboxes(
    stack: LocalStack, count: int, sqs: Any = None, sfn: Any = None
) -> AsyncIterator[list[ApprovalInbox]]:
    """``count`` instances' inboxes on the stack's approvals table, not yet started."""
    async with AsyncExitStack() as exits:
        dynamodb = await exits.enter_async_context(stack.aws().client("dynamodb"))
        yield [
            ApprovalInbox(
                sqs or QueueWithOneRequest("unused"),
                sfn,
                dynamodb,
                "http://sqs/approvals",
                stack.outputs["ApprovalTableName"],
                instance_id=f"instance-{i}",
                retry_min=0.01,
                retry_max=0.02,
            )
            for i in range(count)
        ]


async def moved(inbox: ApprovalInbox, name: str) -> str:
    """Put the request of execution ``name`` into the table as the queue would bring it."""
    message_id = str(uuid.uuid4())
    body = json.dumps(request(name))
    await inbox._move({"MessageId": message_id, "ReceiptHandle": "r", "Body": body})
    return message_id


async def test_the_inbox_moves_requests_into_the_table_and_recovers_when_calls_raise(
    stack: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=approvals.__name__)
    message_id = str(uuid.uuid4())
    sqs = QueueWithOneRequest(message_id)
    async with inboxes(stack, 2, sqs=sqs) as (inbox, other):
        inbox.refresh_every = 0.05
        async with inbox:
            # In the table, then off the queue: the delete comes after the move.
            await eventually(lambda: message_id in [a.id for a in inbox.pending()] and sqs.deleted)
            assert {"approvals-receive", "approvals-refresh"} <= running_tasks()
            assert inbox.error is None
        reported = [r.getMessage() for r in caplog.records if r.name == approvals.__name__]
        failed = reported.index("approvals: the queue and the table: receiving broke; retrying")
        assert "approvals: the queue and the table works again" in reported[failed:]
        # Off the queue, in the table: every instance lists it.
        assert sqs.deleted == ["r1"]
        assert message_id in [a.id for a in await other.refresh()]
        # Moved again (a delete that did not go through): still one request.
        await other._move(
            {"MessageId": message_id, "ReceiptHandle": "r2", "Body": json.dumps(request("x"))}
        )
        assert [a.id for a in await other.refresh()].count(message_id) == 1


async def test_one_decision_wins_wherever_it_is_made(
    stack: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=approvals.__name__)
    sfn = StepFunctions()
    async with inboxes(stack, 2, sfn=sfn) as (first, second):
        name = f"exec-{uuid.uuid4()}"
        approval_id = await moved(first, name)
        outcomes = await asyncio.gather(
            first.decide(approval_id, False, "no", "alice"),
            second.decide(approval_id, True, "yes", "bob"),
            return_exceptions=True,
        )
        decided = [o for o in outcomes if isinstance(o, Decision)]
        refused = [o for o in outcomes if isinstance(o, ApprovalDecidedError)]
        assert (len(decided), len(refused)) == (1, 1), outcomes
        assert len(sfn.sent) == 1
        token, output = sfn.sent[0]
        assert token == f"token-{name}"
        assert output["approved"] is (decided[0] is Decision.APPROVED)
        with pytest.raises(ApprovalDecidedError) as again:
            await second.decide(approval_id, True, "", "carol")
        assert again.value.decision == str(decided[0])
        assert approval_id not in [a.id for a in await second.refresh()]
        item = await table_item(first, approval_id)
        decider = "alice" if decided[0] is Decision.REJECTED else "bob"
        assert item["DecidedBy"]["S"] == decider
        assert item["Outcome"]["S"] == str(decided[0])
        # The log line of the decision names the API key that made it.
        lines = [r.getMessage() for r in caplog.records if approval_id in r.getMessage()]
        assert f"approval {approval_id} for {name}: {decided[0]} by {decider}" in lines


async def test_a_decision_that_could_not_be_sent_leaves_the_request_pending(
    stack: LocalStack,
) -> None:
    sfn = StepFunctions()
    async with inboxes(stack, 1, sfn=sfn) as (inbox,):
        approval_id = await moved(inbox, f"exec-{uuid.uuid4()}")
        sfn.failure = ClientError({"Error": {"Code": "AccessDenied"}}, "SendTaskSuccess")
        with pytest.raises(AwsError):
            await inbox.decide(approval_id, True, "")
        assert approval_id in [a.id for a in await inbox.refresh()]
        sfn.failure = ClientError({"Error": {"Code": "TaskTimedOut"}}, "SendTaskSuccess")
        with pytest.raises(ApprovalDecidedError, match="no longer waits"):
            await inbox.decide(approval_id, True, "")
        assert approval_id not in [a.id for a in await inbox.refresh()]


async def test_the_claim_of_an_instance_that_died_deciding_lapses(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    sfn = StepFunctions()
    async with inboxes(stack, 2, sfn=sfn) as (dead, alive):
        approval_id = await moved(dead, f"exec-{uuid.uuid4()}")
        await dead.decisions.claim(approval_id)  # and then it died
        with pytest.raises(ApprovalDecidedError, match="being decided"):
            await alive.decide(approval_id, True, "")
        monkeypatch.setattr(approval_table, "CLAIM_SECONDS", -1)  # as if the claim's time passed
        approval_id = await moved(dead, f"exec-{uuid.uuid4()}")
        await dead.decisions.claim(approval_id)
        assert await alive.decide(approval_id, True, "") is Decision.APPROVED


async def table_item(inbox: ApprovalInbox, approval_id: str) -> dict[str, Any]:
    answer = await inbox.decisions.dynamodb.get_item(
        TableName=inbox.decisions.table, Key={"Id": {"S": approval_id}}, ConsistentRead=True
    )
    item: dict[str, Any] = answer["Item"]
    return item


class Died(Exception):
    """The instance stopped here."""


@pytest.mark.parametrize("found_by", ["a second decision", "the execution's end"])
async def test_a_decision_that_took_effect_is_recorded_though_its_instance_died_first(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, found_by: str
) -> None:
    payload = {"approval_needed": True, "archive": True, "quality": 75, "subtopic": "nobody"}
    async with AsyncExitStack() as exits:
        sfn = await exits.enter_async_context(stack.aws().client("stepfunctions"))
        sqs = await exits.enter_async_context(stack.aws().client("sqs"))
        dead, alive = await exits.enter_async_context(inboxes(stack, 2, sfn=sfn))
        name = f"archive-{uuid.uuid4()}"
        arn = (
            await sfn.start_execution(
                stateMachineArn=stack.outputs["ArchiveStateMachineArn"],
                name=name,
                input=json.dumps(payload),
            )
        )["executionArn"]
        body = await take_message(
            sqs, stack.outputs["ApprovalQueueUrl"], lambda b: b.get("ExecutionArn") == arn
        )
        approval_id = str(uuid.uuid4())
        await dead._move({"MessageId": approval_id, "ReceiptHandle": "r", "Body": json.dumps(body)})
        # The claim lapses at once, as if its time had passed when the others look.
        monkeypatch.setattr(approval_table, "CLAIM_SECONDS", -1)

        async def die(*args: Any, **kwargs: Any) -> None:
            raise Died

        # SendTaskSuccess goes through, and the instance stops before recording it.
        monkeypatch.setattr(dead, "_settle", die)
        with pytest.raises(Died):
            await dead.decide(approval_id, True, "ship it", "alice")
        async with asyncio.timeout(60):
            while (await sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":  # noqa: ASYNC110
                await asyncio.sleep(0.2)
        if found_by == "a second decision":
            with pytest.raises(ApprovalDecidedError) as refused:
                await alive.decide(approval_id, False, "too late", "bob")
            assert refused.value.decision == "approved"
        else:
            assert approval_id in [a.id for a in await alive.refresh()]
            alive.status_changed({"executionArn": arn, "status": "SUCCEEDED"})
            await eventually_recorded(alive, approval_id)
        item = await table_item(alive, approval_id)
        assert (item["Outcome"]["S"], item["DecidedBy"]["S"]) == ("approved", "alice")
        assert item["DecisionComment"]["S"] == "ship it"
        assert approval_id not in [a.id for a in await alive.refresh()]


async def eventually_recorded(inbox: ApprovalInbox, approval_id: str) -> None:
    async with asyncio.timeout(30):
        while "Outcome" not in await table_item(inbox, approval_id):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
