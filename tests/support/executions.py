"""An :class:`~notifier.requests.executions.Executions` without AWS: Step Functions and S3
answer what a test says, and it records what it was asked.

The HTTP app's tests start executions through it and find those of other instances in it;
the completion sources' tests script the statuses DescribeExecution answers in turn."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from notifier.aws.errors import AwsError
from notifier.aws.read_budget import ReadBudget
from notifier.config import RouteSettings
from notifier.requests.descriptions import execution_arn
from notifier.requests.executions import Executions
from notifier.requests.listing import InvalidPageTokenError, Page
from notifier.requests.process_data import ProcessData
from notifier.requests.waiters import Status

INSTANCE = "test-instance"
MACHINES = "arn:aws:states:us-east-1:123456789012:stateMachine:notifier-test"
ROUTES = {
    "hello": RouteSettings(f"{MACHINES}-Hello", input="body"),
    "p1": RouteSettings(f"{MACHINES}-ProcessA", input="sidecar"),
}
# Never reached by a passing test; only bounds a hung one.
DEADLINE = 30.0


def arn(txn_id: str) -> str:
    """The ARN of the execution of route ``hello`` for ``txn_id``."""
    return execution_arn(ROUTES["hello"].state_machine, txn_id)


def not_found(txn_id: str) -> AwsError:
    return AwsError("DescribeExecution", "ExecutionDoesNotExist", txn_id)


async def no_aws_call(**params: Any) -> dict[str, Any]:
    raise AssertionError(f"the fake made an AWS call: {params}")


def client_error(error: AwsError) -> ClientError:
    """``error`` as the AWS SDK raises it."""
    answer: Any = {"Error": {"Code": error.code, "Message": error.message}}
    return ClientError(answer, error.operation)


class FakeExecutions(Executions):
    """Records what it is asked; fails an operation named in ``failures`` (the first
    ``throttled_next[operation]`` calls of it with ``ThrottlingException``), as the AWS SDK
    would; finds the executions of other instances in ``elsewhere``.

    DescribeExecution draws on a budget of ``rate`` reads a second, as the daemon's does. It
    answers an execution scripted with :meth:`answer` with those statuses in turn, then one
    in ``elsewhere``; any other is RUNNING with ``running_by_default`` (an execution this
    instance started, of which the test says no more), else ``ExecutionDoesNotExist``."""

    def __init__(
        self,
        routes: Callable[[], Mapping[str, RouteSettings]] = lambda: ROUTES,
        *,
        rate: float = 1000,
        running_by_default: bool = True,
    ) -> None:
        super().__init__(
            None, None, "bucket", INSTANCE, routes, budget=ReadBudget(rate),
            put_object=no_aws_call, start_execution=self._start_execution,
        )  # fmt: skip
        self.running_by_default = running_by_default
        self.throttled_next: dict[str, int] = {}
        self.calls: list[str] = []
        """Step Functions operations called, throttled or not."""
        self.started: asyncio.Queue[str] = asyncio.Queue()
        """Transaction ids, as StartExecution is called for them."""
        self.bodies: dict[str, dict[str, Any]] = {}
        self.stopped: list[str] = []
        self.failures: dict[str, AwsError] = {}
        self.elsewhere: dict[str, dict[str, Any]] = {}
        """DescribeExecution answers by transaction id: every execution there is."""
        self.script: dict[str, list[object]] = {}
        """Execution ARN -> the statuses DescribeExecution answers in turn (the last one for
        ever); an entry that is an exception is raised instead."""
        self.objects: dict[str, str | None] = {}
        """The process data objects there are, with their request fingerprints."""
        self.described: list[str] = []
        self.unreachable: str | None = None
        self.sync_answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        """StartSyncExecution calls in flight, by transaction id: the test answers them."""
        self.published_to: dict[str, str] = {}
        """Execution ARN -> the topic its workflow published to (per its history)."""
        self.history_reads = 0
        self.history_failures: list[Exception] = []
        self.process_data = FakeProcessData(self)

    def answer(self, txn_id: str, *statuses: object) -> None:
        """DescribeExecution of :func:`arn` ``(txn_id)`` answers ``statuses`` in turn, the
        last one for ever; an :class:`AwsError` among them is raised as the SDK raises it,
        any other exception as it is."""
        self.script[arn(txn_id)] = list(statuses)

    def _call(self, operation: str) -> None:
        if operation in self.failures:
            raise self.failures[operation]

    async def next_started(self) -> str:
        return await asyncio.wait_for(self.started.get(), DEADLINE)

    def _api(self, operation: str) -> None:
        """A Step Functions call: raises what the SDK would for a failure or throttling."""
        self.calls.append(operation)
        if self.throttled_next.get(operation, 0) > 0:
            self.throttled_next[operation] -= 1
            raise client_error(AwsError(operation, "ThrottlingException", "Rate exceeded"))
        if operation in self.failures:
            raise client_error(self.failures[operation])

    async def _start_execution(
        self,
        *,
        stateMachineArn: str,
        name: str,
        input: str,  # noqa: N803  # the API's names
    ) -> dict[str, Any]:
        """Step Functions' idempotency: the same name and input of a running execution
        returns it; any other execution of that name is ``ExecutionAlreadyExists``."""
        self._api("StartExecution")
        route = next(r for r, s in self.routes.items() if s.state_machine == stateMachineArn)
        existing = self.elsewhere.get(name)
        arn = execution_arn(stateMachineArn, name)
        if existing is not None:
            if existing["input"] != input or existing["status"] != "RUNNING":
                error = AwsError("StartExecution", "ExecutionAlreadyExists", name)
                raise client_error(error)
            return {"executionArn": arn}
        self.started.put_nowait(name)
        self.ran_elsewhere(name, Status.RUNNING, route, input=input)
        return {"executionArn": arn}

    async def run_sync(
        self, route: str, txn_id: str, body: dict[str, Any], owner: str | None = None
    ) -> dict[str, Any]:
        self._call("StartSyncExecution")
        self.bodies[txn_id] = body
        answer = self.sync_answers[txn_id] = asyncio.get_running_loop().create_future()
        self.started.put_nowait(txn_id)
        return await answer

    async def describe(self, arn: str, **turn: Any) -> dict[str, Any]:
        async def call() -> dict[str, Any]:
            self._api("DescribeExecution")
            self.described.append(arn)
            return self._description(arn)

        return await self._read("DescribeExecution", call, **turn)

    def _description(self, arn: str) -> dict[str, Any]:
        script = self.script.get(arn)
        if script:
            status = script.pop(0) if len(script) > 1 else script[0]
            if isinstance(status, AwsError):
                raise client_error(status)
            if isinstance(status, Exception):
                raise status
            description: dict[str, Any] = {"executionArn": arn, "status": status}
            if status == "SUCCEEDED":
                description["output"] = json.dumps({"for": arn})
                description["stopDate"] = datetime.now(UTC)
            return description
        for description in self.elsewhere.values():
            if description["executionArn"] == arn:
                return description
        if self.running_by_default:
            return {"executionArn": arn, "status": "RUNNING"}
        raise client_error(not_found(arn))

    async def published(self, arn: str, topic: str) -> bool:
        self.history_reads += 1
        if self.history_failures:
            raise self.history_failures.pop(0)
        return self.published_to.get(arn) == topic

    async def listing(
        self, routes: list[str], status: str | None, limit: int, token: str | None
    ) -> Page:
        self._call("ListExecutions")
        items = [
            {**description, "route": "hello"}
            for description in self.elsewhere.values()
            if "hello" in routes and status in (None, description["status"])
        ]
        start = int(token or 0)
        more = start + limit < len(items)
        return Page(items[start : start + limit], str(start + limit) if more else None)

    async def history(self, arn: str, limit: int) -> tuple[list[dict[str, Any]], bool]:
        self._call("GetExecutionHistory")
        started = datetime(2026, 1, 1, tzinfo=UTC)
        return [{"id": 1, "timestamp": started, "type": "ExecutionStarted"}], False

    async def definition_of(self, arn: str) -> dict[str, Any]:
        self._call("DescribeStateMachineForExecution")
        return {"StartAt": "Only", "States": {"Only": {"Type": "Pass", "End": True}}}

    async def history_page(
        self, arn: str, limit: int, token: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Two events, one a page when ``limit`` is 1."""
        self._call("GetExecutionHistory")
        if not any(d["executionArn"] == arn for d in self.elsewhere.values()):
            raise AwsError("GetExecutionHistory", "ExecutionDoesNotExist", arn)
        if token not in (None, "1"):
            raise InvalidPageTokenError("nextToken has expired or is invalid")
        started = datetime(2026, 1, 1, tzinfo=UTC)
        events = [
            {"id": 1, "timestamp": started, "type": "ExecutionStarted"},
            {"id": 2, "timestamp": started, "type": "ExecutionSucceeded"},
        ]
        start = int(token or 0)
        more = start + limit < len(events)
        return events[start : start + limit], str(start + limit) if more else None

    async def redrive(self, arn: str) -> None:
        self._call("RedriveExecution")
        for description in self.elsewhere.values():
            if description["executionArn"] == arn:
                if description["status"] not in ("FAILED", "TIMED_OUT", "ABORTED"):
                    raise AwsError("RedriveExecution", "ExecutionNotRedrivable", arn)
                description["status"] = "RUNNING"
                return
        raise AwsError("RedriveExecution", "ExecutionDoesNotExist", arn)

    async def stop(self, arn: str) -> None:
        self._call("StopExecution")
        self.stopped.append(arn)

    async def locate(
        self, txn_id: str, route: str | None = None
    ) -> tuple[str, dict[str, Any]] | None:
        self._call("HeadObject")
        description = self.elsewhere.get(txn_id)
        if description is None or route not in (None, "hello"):
            return None
        return "hello", await self.describe_shared(description["executionArn"])

    def ran_elsewhere(
        self, txn_id: str, status: Status, route: str = "hello", **fields: Any
    ) -> str:
        """An execution of ``route`` (by default started by another instance); returns
        its ARN."""
        arn = execution_arn(ROUTES[route].state_machine, txn_id)
        self.elsewhere[txn_id] = {
            "executionArn": arn,
            "name": txn_id,
            "status": str(status),
            "input": '{"subtopic": "another-instance"}',
            "startDate": datetime(2026, 1, 1, tzinfo=UTC),
            **fields,
        }
        return arn


class FakeProcessData(ProcessData):
    """The process data objects of ``executions``: its ``objects``, with their request
    fingerprints, and ``bodies``; unreachable while it has ``unreachable``."""

    def __init__(self, executions: FakeExecutions) -> None:
        super().__init__(None, "bucket", put_object=no_aws_call)
        self.executions = executions

    async def check_reachable(self) -> str | None:
        return self.executions.unreachable

    async def read(self, txn_id: str) -> Any:
        self.executions._call("GetObject")
        return {**self.executions.bodies.get(txn_id, {}), "step-a-output": "a"}

    async def _put(
        self, route: str, txn_id: str, body: dict[str, Any], fingerprint: str | None
    ) -> None:
        self.executions._call("PutObject")
        if fingerprint is not None and txn_id in self.executions.objects:
            raise AwsError("PutObject", "PreconditionFailed", "If-None-Match")
        self.executions.objects[txn_id] = fingerprint
        self.executions.bodies[txn_id] = body

    async def _stored_fingerprint(self, txn_id: str) -> str | None:
        self.executions._call("HeadObject")
        return self.executions.objects.get(txn_id)
