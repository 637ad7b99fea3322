"""The HTTP API without AWS: the application's own handlers, middlewares and state, with
an :class:`~notifier.requests.executions.Executions` and an approval inbox that answer what a
test says.

Completions are handed to the registry by the test, as a source would."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from botocore.exceptions import ClientError

from notifier import routes
from notifier.app.state import EXECUTIONS, REGISTRY, SETTINGS
from notifier.app.wiring import http_app
from notifier.aws.errors import AwsError
from notifier.config import (
    ApiKeySettings,
    DaemonSettings,
    HttpSettings,
    RouteSettings,
    Settings,
)
from notifier.dashboard import web as dashboard
from notifier.dashboard.approval_links import ApprovalLinks
from notifier.dashboard.approval_table import (
    Approval,
    ApprovalDecidedError,
    ApprovalNotFoundError,
    Decision,
)
from notifier.dashboard.approvals import ApprovalInbox
from notifier.dashboard.state import INBOX, LINKS
from notifier.requests.descriptions import execution_arn
from notifier.requests.executions import Executions
from notifier.requests.listing import InvalidPageTokenError, Page
from notifier.requests.process_data import ProcessData
from notifier.requests.waiters import Completion, Status, utcnow

INSTANCE = "test-instance"
MACHINES = "arn:aws:states:us-east-1:123456789012:stateMachine:notifier-test"
ROUTES = {
    "hello": RouteSettings(f"{MACHINES}-Hello", input="body"),
    "p1": RouteSettings(f"{MACHINES}-ProcessA", input="sidecar"),
}
# Never reached by a passing test; only bounds a hung one.
DEADLINE = 30.0


def settings(*, api_keys: Mapping[str, ApiKeySettings] | None = None, **http: Any) -> Settings:
    """Two routes, polling (no MQTT, no status feed), and keys required when given."""
    return Settings(
        http=HttpSettings(require_api_key=api_keys is not None, **http),
        daemon=DaemonSettings(instance_id=INSTANCE, completion="poll"),
        routes=ROUTES,
        api_keys=api_keys or {},
    )


async def no_aws_call(**params: Any) -> dict[str, Any]:
    raise AssertionError(f"the fake made an AWS call: {params}")


def client_error(error: AwsError) -> ClientError:
    """``error`` as the AWS SDK raises it."""
    answer: Any = {"Error": {"Code": error.code, "Message": error.message}}
    return ClientError(answer, error.operation)


class FakeExecutions(Executions):
    """Records what it is asked; fails an operation named in ``failures`` (the first
    ``throttled[operation]`` calls of it with ``ThrottlingException``), as the AWS SDK
    would; finds the executions of other instances in ``elsewhere``."""

    def __init__(self, routes: Callable[[], Mapping[str, RouteSettings]]) -> None:
        super().__init__(
            None, None, "bucket", INSTANCE, routes,
            put_object=no_aws_call, start_execution=self._start_execution,
        )  # fmt: skip
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
        self.objects: dict[str, str | None] = {}
        """The process data objects there are, with their request fingerprints."""
        self.described: list[str] = []
        self.unreachable: str | None = None
        self.sync_answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        """StartSyncExecution calls in flight, by transaction id: the test answers them."""
        self.process_data = FakeProcessData(self)

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
            for description in self.elsewhere.values():
                if description["executionArn"] == arn:
                    return description
            raise client_error(AwsError("DescribeExecution", "ExecutionDoesNotExist", arn))

        return await self._read("DescribeExecution", call, **turn)

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


class FakeInbox(ApprovalInbox):
    """Pending approvals the test adds; deciding one answers as the real inbox does."""

    def __init__(self) -> None:
        super().__init__(
            None, None, None, "https://sqs.us-east-1.amazonaws.com/1/approvals", "approvals"
        )
        self.approvals: dict[str, Approval] = {}
        self.decided: dict[str, str] = {}
        self.decided_by: dict[str, str | None] = {}
        self.failure: AwsError | None = None

    def add(self, approval_id: str, execution_name: str | None = None) -> Approval:
        """A pending approval of the execution ``execution_name`` (default: ``approval_id``)."""
        name = execution_name or approval_id
        approval = Approval(
            id=approval_id,
            execution_arn=execution_arn(ROUTES["hello"].state_machine, name),
            execution_name=name,
            file={"name": "f.txt"},
            requested_at=utcnow(),
            task_token="secret-token",
        )
        self.approvals[approval_id] = approval
        return approval

    def pending(self) -> list[Approval]:
        return list(self.approvals.values())

    async def find(self, approval_id: str) -> Approval | None:
        return self.approvals.get(approval_id)

    async def refresh(self) -> list[Approval]:
        return self.pending()

    async def state(self, approval_id: str) -> str | None:
        if approval_id in self.decided:
            return self.decided[approval_id]
        return "pending" if approval_id in self.approvals else None

    async def decide(
        self, approval_id: str, approved: bool, comment: str, decided_by: str | None = None
    ) -> Decision:
        if approval_id in self.decided:
            raise ApprovalDecidedError(self.decided[approval_id])
        if approval_id not in self.approvals:
            raise ApprovalNotFoundError(approval_id)
        if self.failure is not None:
            raise self.failure
        del self.approvals[approval_id]
        decision = Decision.APPROVED if approved else Decision.REJECTED
        self.decided[approval_id] = decision
        self.decided_by[approval_id] = decided_by
        return decision


@dataclass
class Served:
    client: TestClient[Any, Any]
    executions: FakeExecutions
    inbox: FakeInbox | None

    @property
    def app(self) -> Any:
        return self.client.app

    def complete(self, txn_id: str, status: Status = Status.SUCCEEDED, **fields: Any) -> None:
        """Hand the registry the completion of ``txn_id``, as a source would."""
        txn = self.client.app[REGISTRY].get(txn_id)
        assert txn is not None, txn_id
        resolved = self.client.app[REGISTRY].resolve(
            txn_id,
            Completion(status, via="mqtt", execution_arn=txn.execution_arn, **fields),
        )
        assert resolved


@asynccontextmanager
async def serving(
    config: Settings | None = None, *, inbox: bool = False, links: ApprovalLinks | None = None
) -> AsyncIterator[Served]:
    """The application (with the dashboard) on a free port, with a fake Executions and,
    with ``inbox``, a fake approval inbox (with ``links``, sending approval links)."""
    app = http_app(config or settings(), INSTANCE, routes.table(dashboard=True))
    dashboard.install(app)
    executions = app[EXECUTIONS] = FakeExecutions(lambda: app[SETTINGS].current.routes)
    fake_inbox = None
    if inbox:
        fake_inbox = app[INBOX] = FakeInbox()
    if links is not None:
        app[LINKS] = links
    # As the daemon runs it: a client that goes away cancels its handler.
    server = TestServer(app, handler_cancellation=True)
    async with TestClient(server) as client:
        yield Served(client, executions, fake_inbox)


def with_http(config: Settings, **http: Any) -> Settings:
    return dataclasses.replace(config, http=dataclasses.replace(config.http, **http))


async def answer(
    response: aiohttp.ClientResponse,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    async with response:
        return response.status, dict(response.headers), await response.json()
