"""The approval inbox's loops outlive failing inner calls."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from notifier.dashboard.approvals import ApprovalInbox
from tests.eventually import eventually
from tests.sources.fakes import running_tasks

REQUEST = {
    "TaskToken": "token",
    "ExecutionArn": "arn:aws:states:us-east-1:123456789012:execution:a:b",
    "ExecutionName": "b",
    "File": {"name": "f"},
}


class FlakySqs:
    """ReceiveMessage and ChangeMessageVisibilityBatch each raise the first time."""

    def __init__(self) -> None:
        self.receives = 0
        self.renewals = 0
        self._messages = [
            {"MessageId": "m1", "ReceiptHandle": "r1", "Body": json.dumps(REQUEST)},
        ]

    async def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        self.receives += 1
        if self.receives == 1:
            raise RuntimeError("receiving broke")
        await asyncio.sleep(0.01)  # a long poll
        messages, self._messages = self._messages, []
        return {"Messages": messages}

    async def change_message_visibility_batch(self, **kwargs: Any) -> None:
        if kwargs["Entries"][0]["VisibilityTimeout"] == 0:
            return  # the inbox letting go at stop
        self.renewals += 1
        if self.renewals == 2:  # the first renewal after the receive
            raise RuntimeError("renewing broke")


async def test_the_inbox_recovers_when_its_inner_calls_raise() -> None:
    sqs = FlakySqs()
    inbox = ApprovalInbox(sqs, None, "http://sqs/approvals", retry_min=0.01, retry_max=0.02)
    inbox.renew_every = 0.01
    async with inbox:
        await eventually(lambda: inbox.error == "receiving broke")
        await eventually(lambda: [a.id for a in inbox.pending()] == ["m1"])
        await eventually(lambda: sqs.renewals >= 4)  # renewing went on after it broke
        assert {"approvals-receive", "approvals-renew"} <= running_tasks()
        assert inbox.error is None
