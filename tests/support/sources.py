"""What the completion sources' tests share: their transactions and how they describe them."""

from __future__ import annotations

import asyncio

from notifier.requests.waiters import Registry, Transaction, utcnow
from notifier.sources.describe import Describer
from tests.support.executions import FakeExecutions, arn


def started(registry: Registry, txn_id: str) -> Transaction:
    """A transaction this instance started."""
    return registry.track(Transaction(txn_id, "hello", arn(txn_id), started_at=utcnow()))


def describer(registry: Registry, executions: FakeExecutions) -> Describer:
    return Describer(registry, executions)


def running_tasks() -> set[str]:
    """Names of the tasks running now."""
    return {task.get_name() for task in asyncio.all_tasks() if not task.done()}
