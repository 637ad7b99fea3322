"""Human approvals: the requests a workflow leaves on the approval queue, and the answers.

A workflow that needs a person's decision sends ``{TaskToken, ExecutionName, ExecutionArn,
File}`` to the approval queue and waits. The inbox long-polls that queue and keeps each
request while it is pending, listed under the SQS message id; the task token stays inside
the daemon. Deciding calls SendTaskSuccess (``{"approved": true, "comment"}``) or
SendTaskFailure (error ``ApprovalRejected``, the comment as cause) and then deletes the
message.

Pending requests stay in flight on the queue, their visibility extended while the daemon
runs; when it stops they are made visible again at once, so nothing is lost across a
restart and another instance can take them. A request whose execution has ended (the
status feed says so, or Step Functions no longer knows its token) is dropped and deleted.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
from collections import OrderedDict
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

VISIBILITY_TIMEOUT = 120
"""Seconds a pending request stays invisible to others; renewed at half that."""
RECEIVE_VISIBILITY_TIMEOUT = 5
"""Visibility of what a receive returns, until it is taken: short, because a long poll cut
off by a stop may still take a message that then reaches nobody."""
SKIPPED_VISIBILITY_TIMEOUT = 42_000
"""A message that is no request is hidden this long (near SQS's 12 h cap), not deleted: it is not
ours to destroy, and not worth receiving again and again."""
REMEMBERED_DECISIONS = 1000
MAX_COMMENT = 1000
"""Characters a decision's comment may have."""
REJECTED_ERROR = "ApprovalRejected"
# What Step Functions answers for a token nobody waits for any more.
_STALE_TOKEN_CODES = ("TaskTimedOut", "TaskDoesNotExist", "InvalidToken")


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
    receipt_handle: str = field(repr=False)

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
        queue_url: str,
        *,
        on_change: Callable[[list[dict[str, Any]]], None] | None = None,
        wait_seconds: int = 20,
        retry_min: float = 1.0,
        retry_max: float = 30.0,
    ) -> None:
        self.sqs = sqs
        self.sfn = sfn
        self.queue_url = queue_url
        self.wait_seconds = wait_seconds
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.error: str | None = None
        """Why the last call to SQS failed; None while it works."""
        self._on_change = on_change
        self._pending: dict[str, Approval] = {}
        self._decided: OrderedDict[str, str] = OrderedDict()
        self.skipped = 0
        """Messages that were not approval requests."""
        self.renew_every = VISIBILITY_TIMEOUT / 2
        """Seconds between renewals of the pending requests' invisibility."""
        self._tasks = BackgroundTasks()

    def pending(self) -> list[Approval]:
        """Oldest request first."""
        return sorted(self._pending.values(), key=lambda a: a.requested_at)

    async def start(self) -> None:
        self._tasks.start(
            "approvals-receive",
            self._receive,
            self._failed,
            expected=(ClientError, BotoCoreError),
            retry_min=self.retry_min,
            retry_max=self.retry_max,
        )
        self._tasks.start("approvals-renew", self._renew_once)

    async def stop(self) -> None:
        await self._tasks.stop()
        await self._change_visibility(list(self._pending.values()), 0)

    async def decide(self, approval_id: str, approved: bool, comment: str) -> Decision:
        """Answer the workflow; returns ``approved`` or ``rejected``.

        Raises :class:`ApprovalNotFoundError`, :class:`ApprovalDecidedError` (also when the
        execution no longer waits) or :class:`AwsError` (the request stays pending).
        """
        if approval_id in self._decided:
            raise ApprovalDecidedError(self._decided[approval_id])
        approval = self._pending.pop(approval_id, None)
        if approval is None:
            raise ApprovalNotFoundError(approval_id)
        decision = Decision.APPROVED if approved else Decision.REJECTED
        outcome: str = decision
        operation = "SendTaskSuccess" if approved else "SendTaskFailure"
        self._decided[approval_id] = "deciding"
        try:
            if approved:
                output = json.dumps({"approved": True, "comment": comment})
                await self.sfn.send_task_success(taskToken=approval.task_token, output=output)
            else:
                await self.sfn.send_task_failure(
                    taskToken=approval.task_token,
                    error=REJECTED_ERROR,
                    cause=comment or "rejected",
                )
        except (ClientError, BotoCoreError) as exc:
            if error_code(exc) not in _STALE_TOKEN_CODES:
                del self._decided[approval_id]
                self._pending[approval_id] = approval
                raise AwsError.wrap(operation, exc) from exc
            outcome = "expired: the execution no longer waits for a decision"
        finally:
            self._changed()
        self._remember(approval_id, outcome)
        log.info(
            "approval %s for %s: %s",
            approval_id, approval.execution_name, outcome,
            extra={"executionArn": approval.execution_arn},
        )  # fmt: skip
        await self._delete(approval)
        if outcome != decision:
            raise ApprovalDecidedError(outcome)
        return decision

    def status_changed(self, message: dict[str, Any]) -> None:
        """A status feed message: an execution that ended takes its pending request along."""
        if not Status.parse(message.get("status")).final:
            return
        ended = [a for a in self._pending.values() if a.execution_arn == message["executionArn"]]
        for approval in ended:
            del self._pending[approval.id]
            self._remember(approval.id, f"expired: the execution ended {message['status']}")
            self._tasks.once(f"approvals-delete-{approval.id}", self._delete(approval))
        if ended:
            self._changed()

    # the queue

    async def _receive(self) -> None:
        response = await self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=self.wait_seconds,
            VisibilityTimeout=RECEIVE_VISIBILITY_TIMEOUT,
            AttributeNames=["SentTimestamp"],
        )
        if self.error is not None:
            log.info("approvals: the queue works again")
            self.error = None
        known = set(self._pending)
        taken = [
            approval
            for message in response.get("Messages", [])
            if (approval := await self._take(message)) is not None
        ]
        await self._change_visibility(taken, VISIBILITY_TIMEOUT)
        if set(self._pending) != known:
            self._changed()

    async def _take(self, message: dict[str, Any]) -> Approval | None:
        """Add ``message`` to the pending requests (or renew its receipt); its request, or
        None if it is none."""
        message_id, receipt = message["MessageId"], message["ReceiptHandle"]
        if message_id in self._decided:  # decided, but the delete did not go through
            await self._delete_receipt(receipt)
            return None
        if message_id in self._pending:
            self._pending[message_id].receipt_handle = receipt
            return self._pending[message_id]
        try:
            approval = _approval(message)
        except ValueError as exc:
            self.skipped += 1
            log.warning(
                "approvals: message %s is not an approval request (%s); left on the queue,"
                " hidden for %d s", message_id, exc, SKIPPED_VISIBILITY_TIMEOUT,
            )  # fmt: skip
            await self._hide(receipt)
            return None
        self._pending[message_id] = approval
        log.info(
            "approval requested by %s (id %s)", approval.execution_name, approval.id,
            extra={"executionArn": approval.execution_arn},
        )  # fmt: skip
        return approval

    async def _renew_once(self) -> None:
        await asyncio.sleep(self.renew_every)
        await self._change_visibility(list(self._pending.values()), VISIBILITY_TIMEOUT)

    async def _change_visibility(self, approvals: list[Approval], seconds: int) -> None:
        for start in range(0, len(approvals), 10):
            batch = approvals[start : start + 10]
            entries = [
                {"Id": str(i), "ReceiptHandle": a.receipt_handle, "VisibilityTimeout": seconds}
                for i, a in enumerate(batch)
            ]
            try:
                await self.sqs.change_message_visibility_batch(
                    QueueUrl=self.queue_url, Entries=entries
                )
            except (ClientError, BotoCoreError) as exc:
                log.warning("approvals: could not change visibility: %s", exc)

    async def _hide(self, receipt: str) -> None:
        try:
            await self.sqs.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=receipt,
                VisibilityTimeout=SKIPPED_VISIBILITY_TIMEOUT,
            )
        except (ClientError, BotoCoreError) as exc:
            log.warning("approvals: could not hide a message: %s", exc)

    async def _delete(self, approval: Approval) -> None:
        await self._delete_receipt(approval.receipt_handle)

    async def _delete_receipt(self, receipt: str) -> None:
        try:
            await self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)
        except (ClientError, BotoCoreError) as exc:
            log.warning("approvals: could not delete a decided request: %s", exc)

    def _remember(self, approval_id: str, decision: str) -> None:
        self._decided[approval_id] = decision
        while len(self._decided) > REMEMBERED_DECISIONS:
            self._decided.popitem(last=False)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change([a.to_json() for a in self.pending()])

    def _failed(self, exc: Exception) -> None:
        message = str(exc)
        if message != self.error:
            log.error("approvals: queue %s: %s; retrying", self.queue_url, message)
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
        receipt_handle=message["ReceiptHandle"],
    )
