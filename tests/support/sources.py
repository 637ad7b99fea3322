"""Stand-ins for what the completion sources call, scripted by the tests."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from notifier.aws.errors import AwsError
from notifier.aws.ratelimit import RateLimiter
from notifier.requests.waiters import Registry, Transaction, utcnow
from notifier.sources.describe import Describer


def arn(txn_id: str) -> str:
    return f"arn:aws:states:us-east-1:123456789012:execution:unit-Hello:{txn_id}"


def started(registry: Registry, txn_id: str) -> Transaction:
    """A transaction this instance started."""
    return registry.track(Transaction(txn_id, "hello", arn(txn_id), started_at=utcnow()))


class ScriptedDescriptions:
    """DescribeExecution answers each execution with its scripted statuses in turn (the
    last one for ever); an entry that is an exception is raised instead."""

    def __init__(self) -> None:
        self.script: dict[str, list[object]] = {}
        self.described: list[str] = []
        self.published_to: dict[str, str] = {}
        """Execution ARN -> the topic its workflow published to (per its history)."""
        self.history_reads = 0
        self.history_failures: list[Exception] = []

    def answer(self, txn_id: str, *statuses: object) -> None:
        self.script[arn(txn_id)] = list(statuses)

    async def describe(self, execution_arn: str) -> dict[str, Any]:
        self.described.append(execution_arn)
        script = self.script.get(execution_arn, ["RUNNING"])
        status = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(status, Exception):
            raise status
        description: dict[str, Any] = {"executionArn": execution_arn, "status": status}
        if status == "SUCCEEDED":
            description["output"] = json.dumps({"for": execution_arn})
            description["stopDate"] = datetime.now(UTC)
        return description

    async def published(self, execution_arn: str, topic: str) -> bool:
        self.history_reads += 1
        if self.history_failures:
            raise self.history_failures.pop(0)
        return self.published_to.get(execution_arn) == topic


def not_found(txn_id: str) -> AwsError:
    return AwsError("DescribeExecution", "ExecutionDoesNotExist", txn_id)


def describer(
    registry: Registry, executions: ScriptedDescriptions, rate: float = 1000
) -> Describer:
    return Describer(registry, executions, RateLimiter(rate))


def running_tasks() -> set[str]:
    """Names of the tasks running now."""
    return {task.get_name() for task in asyncio.all_tasks() if not task.done()}
