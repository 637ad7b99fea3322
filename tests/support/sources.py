"""Stand-ins for what the completion sources call, scripted by the tests."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from notifier.aws.errors import AwsError
from notifier.aws.read_budget import ReadBudget
from notifier.requests.executions import Executions
from notifier.requests.waiters import Registry, Transaction, utcnow
from notifier.sources.describe import Describer


def arn(txn_id: str) -> str:
    return f"arn:aws:states:us-east-1:123456789012:execution:unit-Hello:{txn_id}"


def started(registry: Registry, txn_id: str) -> Transaction:
    """A transaction this instance started."""
    return registry.track(Transaction(txn_id, "hello", arn(txn_id), started_at=utcnow()))


class FakeStepFunctions:
    """The Step Functions client's reads: DescribeExecution answers each execution with its
    scripted statuses in turn (the last one for ever); an entry that is an exception is
    raised instead, an :class:`AwsError` as the SDK raises it."""

    def __init__(self) -> None:
        self.script: dict[str, list[object]] = {}
        self.described: list[str] = []

    async def no_call(self, **params: Any) -> dict[str, Any]:
        raise AssertionError(f"a source made a call it should not: {params}")

    async def describe_execution(self, executionArn: str) -> dict[str, Any]:  # noqa: N803
        self.described.append(executionArn)
        script = self.script.get(executionArn, ["RUNNING"])
        status = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(status, AwsError):
            raise ClientError(
                {"Error": {"Code": status.code, "Message": status.message}},  # type: ignore[typeddict-item]
                status.operation,
            )
        if isinstance(status, Exception):
            raise status
        description: dict[str, Any] = {"executionArn": executionArn, "status": status}
        if status == "SUCCEEDED":
            description["output"] = json.dumps({"for": executionArn})
            description["stopDate"] = datetime.now(UTC)
        return description


class ScriptedDescriptions(Executions):
    """Executions reading a :class:`FakeStepFunctions` within a budget of ``rate``, as the
    daemon's do; whether a workflow published is scripted too."""

    def __init__(self, rate: float = 1000) -> None:
        self.sfn = FakeStepFunctions()
        super().__init__(
            None, self.sfn, "bucket", "unit", dict, budget=ReadBudget(rate),
            put_object=self.sfn.no_call, start_execution=self.sfn.no_call,
        )  # fmt: skip
        self.published_to: dict[str, str] = {}
        """Execution ARN -> the topic its workflow published to (per its history)."""
        self.history_reads = 0
        self.history_failures: list[Exception] = []

    @property
    def described(self) -> list[str]:
        return self.sfn.described

    def answer(self, txn_id: str, *statuses: object) -> None:
        self.sfn.script[arn(txn_id)] = list(statuses)

    async def published(self, execution_arn: str, topic: str) -> bool:
        self.history_reads += 1
        if self.history_failures:
            raise self.history_failures.pop(0)
        return self.published_to.get(execution_arn) == topic


def not_found(txn_id: str) -> AwsError:
    return AwsError("DescribeExecution", "ExecutionDoesNotExist", txn_id)


def describer(registry: Registry, executions: ScriptedDescriptions) -> Describer:
    return Describer(registry, executions)


def running_tasks() -> set[str]:
    """Names of the tasks running now."""
    return {task.get_name() for task in asyncio.all_tasks() if not task.done()}
