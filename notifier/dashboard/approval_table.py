"""The approvals table: the human approvals every instance shares, and their decisions.

A request is put once however often the queue brings it (a conditional put). The table's
sparse ``Pending`` index lists what waits. Deciding takes a request with a conditional update
(``pending`` to ``deciding``, with a claim that lapses after :data:`CLAIM_SECONDS` should its
instance die meanwhile), so one decision wins wherever it is made; settling it records who
decided, when, how and why, and the item expires after :data:`KEPT_SECONDS`. The claim
records the decision about to be sent (its :class:`Intent`), so that a decision that took
effect although its instance died before settling it can still be recorded as made.
"""

from __future__ import annotations

import enum
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from notifier.aws.clients import error_code
from notifier.aws.errors import AwsError
from notifier.requests.waiters import utcnow

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import UpdateItemOutputTypeDef

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class Intent:
    """A decision about to be sent, recorded with the claim."""

    decision: Decision
    comment: str
    decided_by: str | None

    @property
    def output(self) -> dict[str, Any]:
        """What SendTaskSuccess gives the workflow."""
        return {"approved": self.decision is Decision.APPROVED, "comment": self.comment}

    def to_json(self) -> str:
        return json.dumps(
            {"decision": str(self.decision), "comment": self.comment, "by": self.decided_by}
        )

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Intent | None:
        """The intent an item recorded while ``deciding``; None otherwise."""
        if item.get("State", {}).get("S") != DECIDING or "Intent" not in item:
            return None
        raw = json.loads(item["Intent"]["S"])
        return cls(Decision(raw["decision"]), raw["comment"], raw["by"])


class ApprovalTable:
    """The DynamoDB table ``table``; ``instance_id`` is who claims what it decides."""

    def __init__(self, dynamodb: DynamoDBClient, table: str, instance_id: str) -> None:
        self.dynamodb = dynamodb
        self.table = table
        self.instance_id = instance_id

    async def pending(self) -> dict[str, Approval]:
        """The requests waiting (every instance's), by id."""
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
                return found
            start = {"ExclusiveStartKey": page["LastEvaluatedKey"]}

    async def add(self, approval: Approval) -> bool:
        """Put ``approval`` in the table; False when it was there already."""
        try:
            await self.dynamodb.put_item(
                TableName=self.table,
                Item=_item(approval),
                ConditionExpression="attribute_not_exists(Id)",
            )
        except ClientError as exc:
            if error_code(exc) != _CONDITION_FAILED:
                raise
            return False
        return True

    async def claim(
        self, approval_id: str, intent: Intent | None = None
    ) -> tuple[Approval, Intent | None]:
        """Take the request to decide it, recording ``intent``; the request, and the intent
        of an instance whose claim lapsed before it recorded an outcome (None: none)."""
        now = int(time.time())
        sets = "SET #s = :deciding, ClaimedBy = :me, ClaimedUntil = :until"
        values = {
            ":pending": {"S": PENDING},
            ":deciding": {"S": DECIDING},
            ":me": {"S": self.instance_id},
            ":now": {"N": str(now)},
            ":until": {"N": str(now + CLAIM_SECONDS)},
        }
        if intent is not None:
            sets += ", Intent = :intent"
            values[":intent"] = {"S": intent.to_json()}
        try:
            answer = await self._update(
                approval_id,
                sets,
                "#s = :pending OR (#s = :deciding AND ClaimedUntil < :now)",
                values,
                ReturnValues="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) != _CONDITION_FAILED:
                raise AwsError.wrap("UpdateItem", exc) from exc
            raise await self._why_not(approval_id) from None
        except BotoCoreError as exc:
            raise AwsError.wrap("UpdateItem", exc) from exc
        before = answer["Attributes"]
        return _from_item(before), Intent.from_item(before)

    async def _update(
        self,
        approval_id: str,
        update: str,
        condition: str,
        values: dict[str, Any],
        **options: Any,
    ) -> UpdateItemOutputTypeDef:
        """UpdateItem of the request ``approval_id`` if ``condition`` holds (``#s`` is its
        state)."""
        return await self.dynamodb.update_item(
            TableName=self.table,
            Key={"Id": {"S": approval_id}},
            UpdateExpression=update,
            ConditionExpression=condition,
            ExpressionAttributeNames={"#s": "State"},
            ExpressionAttributeValues=values,
            **options,
        )

    async def find(self, approval_id: str) -> Approval | None:
        """The approval as the table has it now, in whatever state; None if there is none."""
        item = await self._item(approval_id)
        return _from_item(item) if item is not None else None

    async def state(self, approval_id: str) -> str | None:
        """The request's state (``pending``, ``deciding``, or its outcome); None if there
        is none."""
        item = await self._item(approval_id)
        if item is None:
            return None
        state: str = item.get("Outcome", item.get("State", {})).get("S", "")
        return state

    async def _item(self, approval_id: str) -> dict[str, Any] | None:
        try:
            answer = await self.dynamodb.get_item(
                TableName=self.table, Key={"Id": {"S": approval_id}}, ConsistentRead=True
            )
        except (ClientError, BotoCoreError) as exc:
            raise AwsError.wrap("GetItem", exc) from exc
        item: dict[str, Any] | None = answer.get("Item")
        return item

    async def _why_not(self, approval_id: str) -> Exception:
        try:
            item = await self._item(approval_id)
        except AwsError as exc:
            return exc
        if item is None:
            return ApprovalNotFoundError(approval_id)
        state = item.get("State", {}).get("S", "")
        if state == DECIDING:
            return ApprovalDecidedError("being decided")
        return ApprovalDecidedError(item.get("Outcome", {}).get("S", state))

    async def settle(
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

    async def expire(self, approval: Approval, status: str) -> bool:
        """Mark a pending request expired; False when it was not pending (decided by another
        instance, being decided, or left ``deciding`` by one that died)."""
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
            if error_code(exc) == _CONDITION_FAILED:
                return False
            log.warning("approvals: could not expire %s: %s", approval.id, exc)
        except BotoCoreError as exc:
            log.warning("approvals: could not expire %s: %s", approval.id, exc)
        return True


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
