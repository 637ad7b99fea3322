"""The queue source's loop outlives a failing inner call (AWS's or any other)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from notifier.ids import new_txn_id
from notifier.sources.sqs import SqsSource
from notifier.waiters import Registry
from tests.sources.fakes import arn, eventually, running_tasks, started


class FlakySqs:
    """An SQS client whose first ReceiveMessage raises; then it has one completion."""

    def __init__(self, body: str) -> None:
        self.receives = 0
        self.deleted: list[str] = []
        self._messages = [{"Body": body, "ReceiptHandle": "r1"}]

    async def get_queue_url(self, **kwargs: Any) -> dict[str, str]:
        return {"QueueUrl": "http://sqs/dlq"}

    async def create_queue(self, **kwargs: Any) -> dict[str, str]:
        return {"QueueUrl": "http://sqs/q"}

    async def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        self.receives += 1
        if self.receives == 1:
            raise RuntimeError("the inner call broke")
        await asyncio.sleep(0.01)  # a long poll
        messages, self._messages = self._messages, []
        return {"Messages": messages}

    async def delete_message_batch(self, **kwargs: Any) -> None:
        self.deleted += [entry["ReceiptHandle"] for entry in kwargs["Entries"]]


async def test_the_queue_source_recovers_when_its_inner_call_raises() -> None:
    registry = Registry(max_held=10)
    txn = started(registry, new_txn_id())
    body = {"txnId": txn.txn_id, "executionArn": arn(txn.txn_id), "status": "SUCCEEDED"}
    sqs = FlakySqs(json.dumps(body))
    dlq = "arn:aws:sqs:us-east-1:123456789012:dlq"
    source = SqsSource(sqs, registry, "q", dlq, retry_min=0.01, retry_max=0.02)
    async with registry.hold(txn.txn_id) as waiter, source:
        await eventually(lambda: source.error == "the inner call broke")
        completion = await waiter
        await eventually(lambda: source.error is None and sqs.deleted == ["r1"])
        assert "sqs-source" in running_tasks()
    assert completion is not None and completion.via == "sqs"
    assert source.resolved == 1 and source.deleted == 1
