"""What Step Functions tells of executions, each read within this instance's share of the
account's read quotas (:mod:`notifier.aws.read_budget`): their descriptions, histories and
definitions, and pages of them by route."""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Unpack

from notifier.aws.errors import AwsError
from notifier.aws.read_budget import BACKGROUND, ReadBudget
from notifier.aws.sfn_calls import read_within
from notifier.config import DaemonSettings, RouteSettings
from notifier.requests.descriptions import execution_arn, published_to
from notifier.requests.listing import InvalidPageTokenError, Page, list_page

if TYPE_CHECKING:
    from types_aiobotocore_stepfunctions import SFNClient
    from types_aiobotocore_stepfunctions.literals import ExecutionStatusType
    from types_aiobotocore_stepfunctions.type_defs import (
        GetExecutionHistoryInputTypeDef,
        ListExecutionsInputTypeDef,
    )

READ_PATIENCE = 2.0
"""Seconds a request that needs a read to be answered at all (a re-attach to a transaction
this instance does not know, a listing, the dashboard's details) waits for it, its turns
in the read budget and its retries after throttling included."""
# Events read back from an execution's end to find its completion's publish.
PUBLISH_LOOKBACK = 50


class ExecutionReads:
    """Reads of the executions of ``routes``, each drawing on ``budget``; one that is
    throttled all the same is tried again as :func:`~notifier.aws.sfn_calls.read_within`
    tells. :class:`~notifier.requests.executions.Executions` adds the calls that act."""

    def __init__(
        self,
        sfn: SFNClient,
        routes: Callable[[], Mapping[str, RouteSettings]],
        *,
        budget: ReadBudget | None = None,
        on_throttled: Callable[[str], None] | None = None,
    ) -> None:
        """``routes`` gives the routes in force (they change when the daemon reloads);
        ``budget`` is the share of the account's reads (None: one of the default rate);
        ``on_throttled`` is told of each call Step Functions throttled, by API."""
        self._sfn = sfn
        self._routes = routes
        self.budget = budget or ReadBudget(DaemonSettings().sfn_read_rate)
        self.throttled: Counter[str] = Counter()
        """Step Functions calls answered with throttling, by API."""
        self._on_throttled = on_throttled

    @property
    def routes(self) -> Mapping[str, RouteSettings]:
        return self._routes()

    def execution_arn(self, route: str, txn_id: str) -> str:
        settings = self.routes[route]
        return execution_arn(settings.state_machine, txn_id, express=settings.workflow == "express")

    async def _read(
        self,
        api: str,
        call: Callable[[], Awaitable[Mapping[str, Any]]],
        *,
        deadline: float = BACKGROUND,
        patience: float | None = None,
        unless: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """``call``, a read of ``api``, within the budget (see
        :func:`~notifier.aws.sfn_calls.read_within`)."""
        return await read_within(
            self.budget,
            self._count_throttled,
            api,
            call,
            deadline=deadline,
            patience=patience,
            unless=unless,
        )

    def _count_throttled(self, api: str) -> None:
        self.throttled[api] += 1
        if self._on_throttled is not None:
            self._on_throttled(api)

    async def describe(
        self,
        arn: str,
        *,
        deadline: float = BACKGROUND,
        patience: float | None = None,
        unless: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """DescribeExecution, read as :meth:`_read` reads."""
        return await self._read(
            "DescribeExecution",
            lambda: self._sfn.describe_execution(executionArn=arn),
            deadline=deadline,
            patience=patience,
            unless=unless,
        )

    async def describe_shared(self, arn: str, deadline: float | None = None) -> dict[str, Any]:
        """DescribeExecution for a request that waits on it, due by ``deadline`` (None: now),
        within :data:`READ_PATIENCE`: raises an :class:`AwsError` ``RateLimited`` when no
        turn came, or the last throttling."""
        return await self.describe(
            arn,
            deadline=time.monotonic() if deadline is None else deadline,
            patience=READ_PATIENCE,
        )

    async def history(self, arn: str, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """The first ``limit`` events of GetExecutionHistory, and whether there are more,
        for someone waiting (each page within :data:`READ_PATIENCE`)."""
        events: list[dict[str, Any]] = []
        token = None
        while len(events) < limit:
            page, token = await self.history_page(arn, min(1000, limit - len(events)), token)
            events.extend(page)
            if not token:
                return events, False
        return events, True

    async def history_page(
        self, arn: str, limit: int, token: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of GetExecutionHistory (up to ``limit`` events, at most 1,000) from
        ``token``, and the token of the next page (None after the last); for someone
        waiting (within :data:`READ_PATIENCE`)."""
        parameters: GetExecutionHistoryInputTypeDef = {"executionArn": arn, "maxResults": limit}
        if token:
            parameters["nextToken"] = token
        try:
            page = await self._read(
                "GetExecutionHistory",
                functools.partial(self._sfn.get_execution_history, **parameters),
                deadline=time.monotonic(),
                patience=READ_PATIENCE,
            )
        except AwsError as exc:
            if exc.code == "InvalidToken":
                raise InvalidPageTokenError("nextToken has expired or is invalid") from exc
            raise
        return list(page.get("events", [])), page.get("nextToken")

    async def definition_of(self, arn: str) -> dict[str, Any]:
        """The state machine definition the execution runs (DescribeStateMachineForExecution),
        for someone waiting (within :data:`READ_PATIENCE`)."""
        described = await self._read(
            "DescribeStateMachineForExecution",
            functools.partial(self._sfn.describe_state_machine_for_execution, executionArn=arn),
            deadline=time.monotonic(),
            patience=READ_PATIENCE,
        )
        definition: dict[str, Any] = json.loads(described["definition"])
        return definition

    async def published(self, arn: str, topic: str) -> bool:
        """Whether the execution published to ``topic`` over IoT (a task state's
        ``aws-sdk:iotdataplane:publish`` that succeeded), from the end of its history."""
        return published_to(await self.last_events(arn, PUBLISH_LOOKBACK), topic)

    async def last_events(self, arn: str, count: int) -> list[dict[str, Any]]:
        """The last ``count`` events of the execution's history, newest first; read in the
        background (after every read a request waits for)."""
        page = await self._read(
            "GetExecutionHistory",
            lambda: self._sfn.get_execution_history(
                executionArn=arn, reverseOrder=True, maxResults=count
            ),
        )
        return list(page.get("events", []))

    async def listing(
        self,
        routes: list[str],
        status: ExecutionStatusType | None,
        limit: int,
        token: str | None,
    ) -> Page:
        """A page of ``routes``' executions (:func:`~notifier.requests.listing.list_page`)."""
        return await list_page(self._list_executions, self.routes, routes, status, limit, token)

    async def _list_executions(
        self, **parameters: Unpack[ListExecutionsInputTypeDef]
    ) -> dict[str, Any]:
        """ListExecutions for someone waiting (within :data:`READ_PATIENCE`)."""
        return await self._read(
            "ListExecutions",
            functools.partial(self._sfn.list_executions, **parameters),
            deadline=time.monotonic(),
            patience=READ_PATIENCE,
        )
