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
decision wins wherever it is made and a second one is a 409. The claim records the decision
about to be sent before SendTaskSuccess: should the instance die after the workflow got it
but before the outcome was written, whoever next finds the request's token stale, or its
execution ended, reads the execution's history, and if the intended answer is there,
records that decision (with who made it), not "expired". The workflow gets
SendTaskSuccess with ``{"approved": true|false, "comment"}``: a rejection is an answer the
workflow handles (Archive's ``Rejected`` branch records it), not a failure. The item then
says who decided (the API key's name), when, how and why; it expires after
:data:`KEPT_SECONDS`. A request whose execution has ended (the status feed says so, or Step
Functions no longer knows its token) is marked expired.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from notifier.aws.clients import error_code
from notifier.aws.errors import AwsError
from notifier.aws.sqs import Message, QueueConsumer
from notifier.dashboard.approval_table import (
    EXPIRED,
    PENDING,
    Approval,
    ApprovalDecidedError,
    ApprovalNotFoundError,
    ApprovalTable,
    Decision,
    Intent,
)
from notifier.lifecycle import BackgroundTasks, Health, Service
from notifier.requests.waiters import Status, utcnow

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_stepfunctions import SFNClient
    from types_aiobotocore_stepfunctions.type_defs import HistoryEventTypeDef

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
# What Step Functions answers for a token nobody waits for any more.
_STALE_TOKEN_CODES = ("TaskTimedOut", "TaskDoesNotExist", "InvalidToken")


class ApprovalInbox(Service):
    """The approval queue's intake (one :class:`~notifier.aws.sqs.QueueConsumer`) into the
    shared table (:class:`~notifier.dashboard.approval_table.ApprovalTable`), the requests
    waiting as last read from it, and the decisions sent to the workflows."""

    def __init__(
        self,
        sqs: SQSClient,
        sfn: SFNClient,
        dynamodb: DynamoDBClient,
        queue_url: str,
        table: str,
        *,
        instance_id: str = "",
        on_change: Callable[[list[dict[str, Any]]], None] | None = None,
        last_events: Callable[[str, int], Awaitable[Sequence[Mapping[str, Any]]]] | None = None,
        on_new: Callable[[Approval], Awaitable[None]] | None = None,
        wait_seconds: int = 20,
        retry_min: float = 1.0,
        retry_max: float = 30.0,
    ) -> None:
        self.sqs = sqs
        self.sfn = sfn
        self._last_events = last_events or self._read_last_events
        """The last events of an execution's history, newest first (such as
        :meth:`~notifier.requests.executions.Executions.last_events`, within the daemon's
        Step Functions read budget); raises AwsError."""
        self.queue_url = queue_url
        self.decisions = ApprovalTable(dynamodb, table, instance_id)
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.refresh_every = REFRESH_SECONDS
        self.health = Health("approvals: the queue and the table", log)
        self._intake = QueueConsumer(
            sqs,
            "approvals-receive",
            self._move_all,
            queue_url=queue_url,
            wait_seconds=wait_seconds,
            retry_min=retry_min,
            retry_max=retry_max,
            health=self.health,
            VisibilityTimeout=RECEIVE_VISIBILITY_TIMEOUT,
            AttributeNames=["SentTimestamp"],
        )
        self._on_change = on_change
        self._on_new = on_new
        """Called once per request, by the instance that first put it in the table (to send
        its links)."""
        self._pending: dict[str, Approval] = {}
        self.skipped = 0
        """Messages that were not approval requests."""
        self._tasks = BackgroundTasks()

    @property
    def error(self) -> str | None:
        """Why the last call to SQS or the table failed; None while they work."""
        return self.health.error

    def pending(self) -> list[Approval]:
        """The requests waiting, oldest first, as last read from the table."""
        return sorted(self._pending.values(), key=lambda a: a.requested_at)

    async def start(self) -> None:
        await self._intake.start()
        self._tasks.start(
            "approvals-refresh",
            self._refresh_once,
            self.health.failed,
            expected=(ClientError, BotoCoreError),
            retry_min=self.retry_min,
            retry_max=self.retry_max,
        )

    async def stop(self) -> None:
        await self._intake.stop()
        await self._tasks.stop()

    async def refresh(self) -> list[Approval]:
        """Read the requests waiting from the table (every instance's); oldest first."""
        found = await self.decisions.pending()
        changed = found.keys() != self._pending.keys()
        self._pending = found
        if changed:
            self._changed()
        return self.pending()

    async def find(self, approval_id: str) -> Approval | None:
        """The approval as the table has it now, in whatever state; None if there is none."""
        return await self.decisions.find(approval_id)

    async def state(self, approval_id: str) -> str | None:
        """The request's state as the table has it now: ``pending``, ``deciding`` or its
        outcome; None if there is none."""
        return await self.decisions.state(approval_id)

    async def decide(
        self, approval_id: str, approved: bool, comment: str, decided_by: str | None = None
    ) -> Decision:
        """Answer the workflow, once whichever instance is asked; returns the decision.

        ``decided_by`` is the name of the API key that decided (None: keys not required).
        Raises :class:`ApprovalNotFoundError`, :class:`ApprovalDecidedError` (decided
        before, being decided, or the execution no longer waits) or :class:`AwsError` (the
        request stays pending).
        """
        decision = Decision.APPROVED if approved else Decision.REJECTED
        intent = Intent(decision, comment, decided_by)
        approval, earlier = await self.decisions.claim(approval_id, intent)
        who = decided_by or "anyone (no API key required)"
        try:
            await self.sfn.send_task_success(
                taskToken=approval.task_token, output=json.dumps(intent.output)
            )
        except (ClientError, BotoCoreError) as exc:
            if error_code(exc) not in _STALE_TOKEN_CODES:
                await self._settle(approval_id, PENDING, keep_pending=True)
                raise AwsError.wrap("SendTaskSuccess", exc) from exc
            if earlier is not None and await self._took_effect(approval, earlier):
                await self._record(approval, earlier)
                raise ApprovalDecidedError(str(earlier.decision)) from None
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
                f"approvals-expire-{approval.id}",
                self._expire(approval, str(message["status"])),
            )
        if ended:
            self._changed()

    async def _expire(self, approval: Approval, status: str) -> None:
        """An ended execution's request: expired, unless an instance decided it, or claimed
        it to decide and died (then its decision, if the execution got it)."""
        if await self.decisions.expire(approval, status):
            return
        try:
            claimed, earlier = await self.decisions.claim(approval.id)
        except (ApprovalDecidedError, ApprovalNotFoundError, AwsError):
            return  # decided, or being decided by a live instance
        if earlier is not None and await self._took_effect(claimed, earlier):
            await self._record(claimed, earlier)
        else:
            await self._settle(approval.id, EXPIRED)

    async def _took_effect(self, approval: Approval, intent: Intent) -> bool:
        """Whether the execution got ``intent``'s answer (a task that succeeded with it, in
        its history); False when the history cannot be read."""
        try:
            events = await self._last_events(approval.execution_arn, 100)
        except AwsError as exc:
            log.warning("approvals: cannot read the history of %s: %s", approval.id, exc)
            return False
        for event in events:
            output = (event.get("taskSucceededEventDetails") or {}).get("output")
            try:
                if output is not None and json.loads(output) == intent.output:
                    return True
            except json.JSONDecodeError:
                continue
        return False

    async def _read_last_events(self, arn: str, count: int) -> list[HistoryEventTypeDef]:
        try:
            page = await self.sfn.get_execution_history(
                executionArn=arn, reverseOrder=True, maxResults=count
            )
        except (ClientError, BotoCoreError) as exc:
            raise AwsError.wrap("GetExecutionHistory", exc) from exc
        return list(page.get("events", []))

    async def _record(self, approval: Approval, intent: Intent) -> None:
        """Write the outcome of a decision that took effect though the instance that sent
        it did not record it."""
        await self._settle(
            approval.id, intent.decision, decided_by=intent.decided_by, comment=intent.comment
        )
        log.info(
            "approval %s for %s: %s by %s, recorded after its instance stopped",
            approval.id, approval.execution_name, intent.decision,
            intent.decided_by or "anyone (no API key required)",
            extra={"executionArn": approval.execution_arn},
        )  # fmt: skip

    async def _settle(self, approval_id: str, state: str, **details: Any) -> None:
        await self.decisions.settle(approval_id, state, **details)
        self._pending.pop(approval_id, None)
        if details.get("keep_pending"):
            await self.refresh()
        else:
            self._changed()

    # the queue

    async def _move_all(self, messages: list[Message]) -> None:
        moved = 0
        for message in messages:
            moved += await self._move(message)
        if moved:
            await self.refresh()

    async def _move(self, message: Message) -> bool:
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
        if await self.decisions.add(approval):  # else: moved before, not deleted then
            log.info(
                "approval requested by %s (id %s)", approval.execution_name, approval.id,
                extra={"executionArn": approval.execution_arn},
            )  # fmt: skip
            if self._on_new is not None:
                await self._on_new(approval)
        await self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)
        return True

    async def _refresh_once(self) -> None:
        await asyncio.sleep(self.refresh_every)
        await self.refresh()
        self.health.works()

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


def _approval(message: Message) -> Approval:
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
