"""The HTTP API without AWS: the application's own handlers, middlewares and state, with
a :class:`~tests.support.executions.FakeExecutions` and an approval inbox that answer what a
test says.

Completions are handed to the registry by the test, as a source would."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

from notifier import routes
from notifier.app.state import EXECUTIONS, REGISTRY, SETTINGS
from notifier.app.wiring import http_app
from notifier.aws.errors import AwsError
from notifier.config import ApiKeySettings, DaemonSettings, HttpSettings, Settings
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
from notifier.requests.waiters import Completion, Status, utcnow
from tests.support.executions import INSTANCE, ROUTES, FakeExecutions, arn


def settings(*, api_keys: Mapping[str, ApiKeySettings] | None = None, **http: Any) -> Settings:
    """Two routes, polling (no MQTT, no status feed), and keys required when given."""
    return Settings(
        http=HttpSettings(require_api_key=api_keys is not None, **http),
        daemon=DaemonSettings(instance_id=INSTANCE, completion="poll"),
        routes=ROUTES,
        api_keys=api_keys or {},
    )


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
            execution_arn=arn(name),
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
    config = config or settings()
    app = http_app(config, INSTANCE, routes.table(dashboard=True))
    dashboard.install(app)
    executions = app[EXECUTIONS] = FakeExecutions(
        lambda: app[SETTINGS].current.routes,
        rate=config.daemon.sfn_read_rate,
        running_by_default=False,
    )
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
