"""Human approvals: the requests a workflow leaves on the approval queue, shared by every
instance through one table, and the answers.

A workflow that needs a person's decision sends ``{TaskToken, ExecutionName, ExecutionArn,
File}`` to the approval queue and waits. Every instance long-polls that queue and moves
each request into the stack's approvals table (a conditional put: a request moved twice is
stored once), then deletes the message: nothing stays in flight on the queue, so no
instance hides a request from the others, and a restart loses none. The table's sparse
``Pending`` index lists what waits, for every instance alike. The task token stays in the
table and the daemon; the API shows the request under its SQS message id.

Deciding takes the request with a conditional update (``pending`` to ``deciding``, with a
claim that lapses after :data:`CLAIM_SECONDS` should its instance die meanwhile), so one
decision wins wherever it is made and a second one is a 409. The workflow gets
SendTaskSuccess with ``{"approved": true|false, "comment"}``: a rejection is an answer the
workflow handles (Archive's ``Rejected`` branch records it), not a failure. The item then
says who decided (the API key's name), when, how and why; it expires after
:data:`KEPT_SECONDS`. A request whose execution has ended (the status feed says so, or Step
Functions no longer knows its token) is marked expired.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from notifier.aws import error_code
from notifier.executions import AwsError
from notifier.lifecycle import BackgroundTasks, Service
from notifier.waiters import Status, utcnow

log = logging.getLogger(__name__)

RECEIVE_VISIBILITY_TIMEOUT = 5
"""Visibility of what a receive returns until it is moved into the table and deleted; should
an instance die in between (or its long poll outlive it and take a message nobody reads),
another takes the message after that. Kept short: moving a request twice stores it once."""
SKIPPED_VISIBILITY_TIMEOUT = 42_000
"""A message that is no request is hidden this long (near SQS's 12 h cap), not deleted: it is not
ours to destroy, and not worth receiving again and again."""
REFRESH_SECONDS = 2.0
"""How often the pending requests are read from the table, for the dashboard's stream."""
CLAIM_SECONDS = 60
"""How long a decision being made holds its request; an instance that dies while deciding
lets go of it after that."""
KEPT_SECONDS = 14 * 24 * 3600
"""How long a request stays in the table (its ``ExpiresAt``, DynamoDB's time to live), as long
as the queue keeps a message."""
MAX_COMMENT = 1000
"""Characters a decision's comment may have."""
PENDING_INDEX = "Pending"
"""The table's sparse index of the requests that wait: only they have a ``Pending``."""
PENDING = "pending"
DECIDING = "deciding"
EXPIRED = "expired"
# What Step Functions answers for a token nobody waits for any more.
_STALE_TOKEN_CODES = ("TaskTimedOut", "TaskDoesNotExist", "InvalidToken")
_CONDITION_FAILED = "ConditionalCheckFailedException"


class Decision(enum.StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"


class ApprovalNotFoundError(Exception):
    pass


class ApprovalDecidedError(Exception):
    def __init__(self, decision: str) -> None:
        super().__init__(f"already decided: {decision}")
        self.decision = decision


@dataclass
class Approval:
    id: str
    execution_arn: str
    execution_name: str
    file: Any
    requested_at: datetime
    task_token: str = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """What the API shows: never the task token."""
        return {
            "id": self.id,
            "executionArn": self.execution_arn,
            "executionName": self.execution_name,
            "file": self.file,
            "requestedAt": self.requested_at.isoformat(),
        }


class ApprovalInbox(Service):
    def __init__(
        self,
        sqs: Any,
        sfn: Any,
        dynamodb: Any,
        queue_url: str,
        table: str,
        *,
        instance_id: str = "",
        on_change: Callable[[list[dict[str, Any]]], None] | None = None,
        wait_seconds: int = 20,
        retry_min: float = 1.0,
        retry_max: float = 30.0,
    ) -> None:
        self.sqs = sqs
        self.sfn = sfn
        self.dynamodb = dynamodb
        self.queue_url = queue_url
        self.table = table
        self.instance_id = instance_id
        self.wait_seconds = wait_seconds
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.refresh_every = REFRESH_SECONDS
        self.error: str | None = None
        """Why the last call to SQS or the table failed; None while they work."""
        self._on_change = on_change
        self._pending: dict[str, Approval] = {}
        self.skipped = 0
        """Messages that were not approval requests."""
        self._tasks = BackgroundTasks()

    def pending(self) -> list[Approval]:
        """The requests waiting, oldest first, as last read from the table."""
        return sorted(self._pending.values(), key=lambda a: a.requested_at)

    async def start(self) -> None:
        loops = (("approvals-receive", self._receive), ("approvals-refresh", self._refresh_once))
        for name, step in loops:
            self._tasks.start(
                name,
                step,
                self._failed,
                expected=(ClientError, BotoCoreError),
                retry_min=self.retry_min,
                retry_max=self.retry_max,
            )

    async def stop(self) -> None:
        await self._tasks.stop()

    async def refresh(self) -> list[Approval]:
        """Read the requests waiting from the table (every instance's); oldest first."""
        found: dict[str, Approval] = {}
        start: dict[str, Any] = {}
        while True:
            page = await self.dynamodb.query(
                TableName=self.table,
                IndexName=PENDING_INDEX,
                KeyConditionExpression="#p = :pending",
                ExpressionAttributeNames={"#p": "Pending"},
                ExpressionAttributeValues={":pending": {"S": PENDING}},
                **start,
            )
            for item in page.get("Items", []):
                approval = _from_item(item)
                found[approval.id] = approval
            if "LastEvaluatedKey" not in page:
                break
            start = {"ExclusiveStartKey": page["LastEvaluatedKey"]}
        changed = found.keys() != self._pending.keys()
        self._pending = found
        if changed:
            self._changed()
        return self.pending()

    async def decide(
        self, approval_id: str, approved: bool, comment: str, decided_by: str | None = None
    ) -> Decision:
        """Answer the workflow, once whichever instance is asked; returns the decision.

        ``decided_by`` is the name of the API key that decided (None: keys not required).
        Raises :class:`ApprovalNotFoundError`, :class:`ApprovalDecidedError` (decided
        before, being decided, or the execution no longer waits) or :class:`AwsError` (the
        request stays pending).
        """
        approval = await self._claim(approval_id)
        decision = Decision.APPROVED if approved else Decision.REJECTED
        who = decided_by or "anyone (no API key required)"
        output = json.dumps({"approved": approved, "comment": comment})
        try:
            await self.sfn.send_task_success(taskToken=approval.task_token, output=output)
        except (ClientError, BotoCoreError) as exc:
            if error_code(exc) not in _STALE_TOKEN_CODES:
                await self._settle(approval_id, PENDING, keep_pending=True)
                raise AwsError.wrap("SendTaskSuccess", exc) from exc
            await self._settle(approval_id, EXPIRED)
            log.info(
                "approval %s for %s: expired, the execution no longer waits (asked by %s)",
                approval_id, approval.execution_name, who,
                extra={"executionArn": approval.execution_arn},
            )  # fmt: skip
            raise ApprovalDecidedError(
                "expired: the execution no longer waits for a decision"
            ) from None
        await self._settle(approval_id, decision, decided_by=decided_by, comment=comment)
        log.info(
            "approval %s for %s: %s by %s",
            approval_id, approval.execution_name, decision, who,
            extra={"executionArn": approval.execution_arn},
        )  # fmt: skip
        return decision

    def status_changed(self, message: dict[str, Any]) -> None:
        """A status feed message: an execution that ended takes its pending request along."""
        if not Status.parse(message.get("status")).final:
            return
        ended = [a for a in self._pending.values() if a.execution_arn == message["executionArn"]]
        for approval in ended:
            del self._pending[approval.id]
            self._tasks.once(
                f"approvals-expire-{approval.id}", self._expire(approval, str(message["status"]))
            )
        if ended:
            self._changed()

    # the table

    async def _claim(self, approval_id: str) -> Approval:
        now = int(time.time())
        try:
            answer = await self._update(
                approval_id,
                "SET #s = :deciding, ClaimedBy = :me, ClaimedUntil = :until",
                "#s = :pending OR (#s = :deciding AND ClaimedUntil < :now)",
                {
                    ":pending": {"S": PENDING},
                    ":deciding": {"S": DECIDING},
                    ":me": {"S": self.instance_id},
                    ":now": {"N": str(now)},
                    ":until": {"N": str(now + CLAIM_SECONDS)},
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if error_code(exc) != _CONDITION_FAILED:
                raise AwsError.wrap("UpdateItem", exc) from exc
            raise await self._why_not(approval_id) from None
        except BotoCoreError as exc:
            raise AwsError.wrap("UpdateItem", exc) from exc
        return _from_item(answer["Attributes"])

    async def _update(
        self,
        approval_id: str,
        update: str,
        condition: str,
        values: dict[str, Any],
        **options: Any,
    ) -> dict[str, Any]:
        """UpdateItem of the request ``approval_id`` if ``condition`` holds (``#s`` is its
        state)."""
        answer: dict[str, Any] = await self.dynamodb.update_item(
            TableName=self.table,
            Key={"Id": {"S": approval_id}},
            UpdateExpression=update,
            ConditionExpression=condition,
            ExpressionAttributeNames={"#s": "State"},
            ExpressionAttributeValues=values,
            **options,
        )
        return answer

    async def find(self, approval_id: str) -> Approval | None:
        """The approval as the table has it now, in whatever state; None if there is none."""
        try:
            answer = await self.dynamodb.get_item(
                TableName=self.table, Key={"Id": {"S": approval_id}}, ConsistentRead=True
            )
        except (ClientError, BotoCoreError) as exc:
            raise AwsError.wrap("GetItem", exc) from exc
        item = answer.get("Item")
        return _from_item(item) if item is not None else None

    async def _why_not(self, approval_id: str) -> Exception:
        try:
            item = (
                await self.dynamodb.get_item(
                    TableName=self.table, Key={"Id": {"S": approval_id}}, ConsistentRead=True
                )
            ).get("Item")
        except (ClientError, BotoCoreError) as exc:
            return AwsError.wrap("GetItem", exc)
        if item is None:
            return ApprovalNotFoundError(approval_id)
        state = item.get("State", {}).get("S", "")
        if state == DECIDING:
            return ApprovalDecidedError("being decided")
        return ApprovalDecidedError(item.get("Outcome", {}).get("S", state))

    async def _settle(
        self,
        approval_id: str,
        state: str,
        *,
        keep_pending: bool = False,
        decided_by: str | None = None,
        comment: str | None = None,
    ) -> None:
        """Leave ``deciding`` for ``state``; the request goes off the index unless it stays
        pending (the decision could not be sent)."""
        values: dict[str, Any] = {
            ":state": {"S": state},
            ":deciding": {"S": DECIDING},
            ":me": {"S": self.instance_id},
        }
        sets = ["#s = :state"]
        if not keep_pending:
            sets += ["Outcome = :state", "DecidedAt = :at"]
            values[":at"] = {"S": utcnow().isoformat()}
            if decided_by is not None:
                sets.append("DecidedBy = :by")
                values[":by"] = {"S": decided_by}
            if comment is not None:
                sets.append("DecisionComment = :comment")
                values[":comment"] = {"S": comment}
        update = "SET " + ", ".join(sets) + ("" if keep_pending else " REMOVE Pending")
        try:
            await self._update(approval_id, update, "#s = :deciding AND ClaimedBy = :me", values)
        except (ClientError, BotoCoreError) as exc:
            # The workflow has its answer (or keeps waiting); the claim lapses by itself.
            log.warning("approvals: could not record %s for %s: %s", state, approval_id, exc)
        self._pending.pop(approval_id, None)
        if keep_pending:
            await self.refresh()
        else:
            self._changed()

    async def _expire(self, approval: Approval, status: str) -> None:
        try:
            await self._update(
                approval.id,
                "SET #s = :expired, Outcome = :outcome REMOVE Pending",
                "#s = :pending",
                {
                    ":pending": {"S": PENDING},
                    ":expired": {"S": EXPIRED},
                    ":outcome": {"S": f"expired: the execution ended {status}"},
                },
            )
        except ClientError as exc:
            if error_code(exc) != _CONDITION_FAILED:  # else: another instance was first
                log.warning("approvals: could not expire %s: %s", approval.id, exc)
        except BotoCoreError as exc:
            log.warning("approvals: could not expire %s: %s", approval.id, exc)

    # the queue

    async def _receive(self) -> None:
        response = await self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=self.wait_seconds,
            VisibilityTimeout=RECEIVE_VISIBILITY_TIMEOUT,
            AttributeNames=["SentTimestamp"],
        )
        self._works()
        moved = 0
        for message in response.get("Messages", []):
            moved += await self._move(message)
        if moved:
            await self.refresh()

    async def _move(self, message: dict[str, Any]) -> bool:
        """Put the request ``message`` holds into the table (once, however often it comes)
        and delete the message; whether it was a request."""
        message_id, receipt = message["MessageId"], message["ReceiptHandle"]
        try:
            approval = _approval(message)
        except ValueError as exc:
            self.skipped += 1
            log.warning(
                "approvals: message %s is not an approval request (%s); left on the queue,"
                " hidden for %d s", message_id, exc, SKIPPED_VISIBILITY_TIMEOUT,
            )  # fmt: skip
            await self._hide(receipt)
            return False
        try:
            await self.dynamodb.put_item(
                TableName=self.table,
                Item=_item(approval),
                ConditionExpression="attribute_not_exists(Id)",
            )
            log.info(
                "approval requested by %s (id %s)", approval.execution_name, approval.id,
                extra={"executionArn": approval.execution_arn},
            )  # fmt: skip
        except ClientError as exc:
            if error_code(exc) != _CONDITION_FAILED:  # else: moved before, not deleted then
                raise
        await self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)
        return True

    async def _refresh_once(self) -> None:
        await asyncio.sleep(self.refresh_every)
        await self.refresh()
        self._works()

    async def _hide(self, receipt: str) -> None:
        try:
            await self.sqs.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=receipt,
                VisibilityTimeout=SKIPPED_VISIBILITY_TIMEOUT,
            )
        except (ClientError, BotoCoreError) as exc:
            log.warning("approvals: could not hide a message: %s", exc)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change([a.to_json() for a in self.pending()])

    def _works(self) -> None:
        if self.error is not None:
            log.info("approvals: the queue and the table work again")
            self.error = None

    def _failed(self, exc: Exception) -> None:
        message = str(exc)
        if message != self.error:
            log.error("approvals: %s; retrying", message)
        self.error = message


def _approval(message: dict[str, Any]) -> Approval:
    try:
        body = json.loads(message["Body"])
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    fields: dict[str, Any] = {
        key: body.get(key) for key in ("TaskToken", "ExecutionArn", "ExecutionName")
    }
    for key, value in fields.items():
        if not isinstance(value, str) or not value:
            raise ValueError(f"{key} is missing")
    sent = message.get("Attributes", {}).get("SentTimestamp")
    requested_at = datetime.fromtimestamp(int(sent) / 1000, UTC) if sent else utcnow()
    return Approval(
        id=message["MessageId"],
        execution_arn=fields["ExecutionArn"],
        execution_name=fields["ExecutionName"],
        file=body.get("File"),
        requested_at=requested_at,
        task_token=fields["TaskToken"],
    )


def _item(approval: Approval) -> dict[str, Any]:
    return {
        "Id": {"S": approval.id},
        "State": {"S": PENDING},
        "Pending": {"S": PENDING},
        "ExecutionArn": {"S": approval.execution_arn},
        "ExecutionName": {"S": approval.execution_name},
        "File": {"S": json.dumps(approval.file)},
        "RequestedAt": {"S": approval.requested_at.isoformat()},
        "TaskToken": {"S": approval.task_token},
        "ExpiresAt": {"N": str(int(time.time()) + KEPT_SECONDS)},
    }


def _from_item(item: dict[str, Any]) -> Approval:
    return Approval(
        id=item["Id"]["S"],
        execution_arn=item["ExecutionArn"]["S"],
        execution_name=item["ExecutionName"]["S"],
        file=json.loads(item["File"]["S"]),
        requested_at=datetime.fromisoformat(item["RequestedAt"]["S"]),
        task_token=item["TaskToken"]["S"],
    )
