"""The AWS calls behind a transaction: its body stored as process data
(:mod:`~notifier.requests.process_data`), its execution started with the input of
:mod:`~notifier.requests.execution_input` (or run to its end, for an Express workflow),
stopped, redriven, and found from any instance. The reads of Step Functions are
:mod:`~notifier.requests.execution_reads`'."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from notifier.aws.clients import (
    PutObjectCall,
    StartExecutionCall,
    StartSyncExecutionCall,
    span_attributes,
)
from notifier.aws.errors import AwsError
from notifier.aws.read_budget import ReadBudget
from notifier.aws.sfn_calls import StartPacer, retry_throttled
from notifier.config import DaemonSettings, RouteSettings
from notifier.requests.execution_input import as_given, encoded, input_for
from notifier.requests.execution_reads import READ_PATIENCE, ExecutionReads
from notifier.requests.idempotency import IdempotencyConflictError
from notifier.requests.process_data import ProcessData
from notifier.requests.waiters import utcnow
from notifier.tracing import TRACE_CONTEXT_KEY, Tracing

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_stepfunctions import SFNClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyedStart:
    """How a keyed transaction's execution was found: started (again) by this instance,
    or already there, as DescribeExecution told."""

    started_at: datetime | None = None
    description: dict[str, Any] | None = None


class Executions(ExecutionReads):
    """Starts, describes and stops executions, and keeps their process data in S3
    (``process_data``).

    ``put_object`` and ``start_execution``, the two calls of every start, default to the
    clients' own methods (see :mod:`notifier.aws.fast_calls` for cheaper ones). Every read of
    Step Functions draws on ``budget`` (:mod:`notifier.aws.read_budget`); each StartExecution
    waits its turn at ``starts`` (:class:`~notifier.aws.sfn_calls.StartPacer`), and one that
    is throttled all the same is tried again, with backoff, until the request's deadline.
    """

    def __init__(
        self,
        s3: S3Client,
        sfn: SFNClient,
        bucket: str,
        subtopic: str,
        routes: Callable[[], Mapping[str, RouteSettings]],
        *,
        budget: ReadBudget | None = None,
        starts: StartPacer | None = None,
        on_throttled: Callable[[str], None] | None = None,
        put_object: PutObjectCall | None = None,
        start_execution: StartExecutionCall | None = None,
        start_sync_execution: StartSyncExecutionCall | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        """``routes`` gives the routes in force (they change when the daemon reloads);
        ``budget`` is the share of the account's reads and ``starts`` of its starts (None:
        ones of the default rates);
        ``on_throttled`` is told of each call Step Functions throttled, by API;
        ``tracing`` makes a span of each call that starts an execution, and puts the trace
        context in the execution's input."""
        super().__init__(sfn, routes, budget=budget, on_throttled=on_throttled)
        self._start_execution: StartExecutionCall = start_execution or sfn.start_execution
        # Blocks until an Express workflow ends: a client of its own, never retried.
        self._start_sync_execution: StartSyncExecutionCall | None = start_sync_execution
        self.subtopic = subtopic
        self.subtopic_for: Callable[[str, float | None], Awaitable[str]] = self._own_subtopic
        """The subtopic a new execution for a transaction id is to publish its completion to
        (the connection of the MQTT pool it is given, once one has room: waiting for it no
        longer than the given seconds, None: the pool's own patience)."""
        self.starts = starts or StartPacer(DaemonSettings().sfn_start_rate)
        self.tracing = tracing or Tracing()
        self.process_data = ProcessData(s3, bucket, put_object=put_object, tracing=self.tracing)

    def check_input_size(self, route: str, body: dict[str, Any], owner: str | None = None) -> None:
        """Raise :class:`InputTooLargeError` if the input of the route's execution for
        ``body`` is too large whatever its subtopic (which is only chosen when it starts)."""
        encoded(self._input(route, "", body, "", owner))

    async def start(
        self,
        route: str,
        txn_id: str,
        body: dict[str, Any],
        owner: str | None = None,
        deadline: float | None = None,
    ) -> datetime:
        """Store ``body`` under ``txn_id`` and start the route's execution named ``txn_id``.

        Returns when StartExecution returned; a throttled one is tried again until
        ``deadline`` (monotonic seconds; None: once). Retrying with the same id and body is
        idempotent: the same S3 object, and Step Functions accepts the same name and input.
        Raises :class:`InputTooLargeError` before StartExecution for an input too large
        (:meth:`check_input_size` tells before any call, but for the subtopic's length).
        """
        await self.process_data.store(route, txn_id, body)
        await self._start_named(route, txn_id, body, owner, deadline)
        return utcnow()

    async def start_keyed(
        self,
        route: str,
        txn_id: str,
        body: dict[str, Any],
        fingerprint: str,
        owner: str | None = None,
        deadline: float | None = None,
    ) -> KeyedStart:
        """Start a keyed transaction, or find it started: safe to call again and again, from
        any instance, and never overwriting what is stored.

        The process data object is written only if there is none (``If-None-Match: *``),
        with the request's fingerprint; one already there with another fingerprint means
        another request took the key (:class:`IdempotencyConflictError`). Step Functions
        settles the rest: StartExecution with the same name and input returns the running
        execution; otherwise the execution is there already (``ExecutionAlreadyExists``)
        and is described, and for a body route its input must be this body. A throttled
        StartExecution is tried again until ``deadline``, as by :meth:`start`.
        """
        await self.process_data.store(route, txn_id, body, fingerprint)
        try:
            await self._start_named(route, txn_id, body, owner, deadline)
        except AwsError as exc:
            if exc.code != "ExecutionAlreadyExists":
                raise
        else:
            return KeyedStart(started_at=utcnow())
        # The request is held for its answer anyway, so its look at the execution may wait
        # its turn until the request's deadline: a burst of keyed retries (an instance died
        # holding them) is answered, not refused for the budget.
        now = time.monotonic()
        description = await self.describe(
            self.execution_arn(route, txn_id),
            deadline=now if deadline is None else deadline,
            patience=READ_PATIENCE if deadline is None else max(READ_PATIENCE, deadline - now),
        )
        if self.routes[route].input == "body":
            try:
                started_with = json.loads(description.get("input") or "{}")
            except json.JSONDecodeError:
                started_with = None
            if not isinstance(started_with, dict) or as_given(started_with) != as_given(body):
                raise IdempotencyConflictError(txn_id)
        return KeyedStart(description=description)

    async def store_for_sync(
        self, route: str, txn_id: str, body: dict[str, Any], fingerprint: str | None = None
    ) -> None:
        """Store an Express start's body, before :meth:`run_sync`. With a ``fingerprint``
        (a keyed start) only if there is none, and an object there with another one is an
        :class:`IdempotencyConflictError`. Express keeps no execution to find by its name:
        the same key and body run the workflow again."""
        await self.process_data.store(route, txn_id, body, fingerprint)

    async def run_sync(
        self, route: str, txn_id: str, body: dict[str, Any], owner: str | None = None
    ) -> dict[str, Any]:
        """StartSyncExecution of the route's Express state machine, named ``txn_id``: its
        answer once the workflow ended (shaped as DescribeExecution's)."""
        settings = self.routes[route]
        call = self._start_sync_execution or self._sfn.start_sync_execution
        subtopic = await self.subtopic_for(txn_id, None)
        execution_input = encoded(self._input(route, txn_id, body, subtopic, owner))
        try:
            return dict(
                await call(
                    stateMachineArn=settings.state_machine,
                    name=txn_id,
                    input=execution_input,
                )
            )
        except (ClientError, BotoCoreError) as exc:
            raise AwsError.wrap("StartSyncExecution", exc) from exc

    async def _start_named(
        self,
        route: str,
        txn_id: str,
        body: dict[str, Any],
        owner: str | None,
        deadline: float | None,
    ) -> None:
        """StartExecution of the route's state machine, named ``txn_id``, with the input
        for ``body`` (:class:`InputTooLargeError` if too large), each attempt in its turn
        at the start pacer; while it is throttled, again after a backoff until
        ``deadline``. The name makes it start at most once: ``ExecutionAlreadyExists`` on a
        later attempt means an attempt that seemed to fail started it."""
        # The first turn comes before the subtopic is chosen: the MQTT pool gives each
        # connection its share of completions by when their executions start.
        await self.starts.turn(deadline)
        patience = None if deadline is None else max(0.0, deadline - time.monotonic())
        subtopic = await self.subtopic_for(txn_id, patience)
        execution_input = self._input(route, txn_id, body, subtopic, owner)
        text = encoded(execution_input)
        with self.tracing.span("StepFunctions StartExecution", span_attributes(
            self._start_execution
        )):  # fmt: skip
            if carrier := self.tracing.carrier():
                text = json.dumps({**execution_input, TRACE_CONTEXT_KEY: carrier})
            call = functools.partial(
                self._start_execution,
                stateMachineArn=self.routes[route].state_machine,
                name=txn_id,
                input=text,
            )
            await retry_throttled(
                "StartExecution",
                call,
                self._count_throttled,
                deadline,
                done_when_again="ExecutionAlreadyExists",
                turn=functools.partial(self.starts.turn, deadline),
            )

    async def _own_subtopic(self, txn_id: str, patience: float | None) -> str:
        return self.subtopic

    def _input(
        self, route: str, txn_id: str, body: dict[str, Any], subtopic: str, owner: str | None
    ) -> dict[str, Any]:
        sidecar = self.routes[route].input == "sidecar"
        return input_for(body, txn_id, subtopic, owner, sidecar=sidecar)

    async def stop(self, arn: str) -> None:
        try:
            await self._sfn.stop_execution(
                executionArn=arn, error="Stopped", cause="stopped through the notifier API"
            )
        except (ClientError, BotoCoreError) as exc:
            error = AwsError.wrap("StopExecution", exc)
            if error.throttled:
                self._count_throttled(error.operation)
            raise error from exc

    async def redrive(self, arn: str) -> None:
        """RedriveExecution: a failed, timed-out or aborted Standard execution runs again
        under the same ARN, from the state that did not succeed."""
        try:
            await self._sfn.redrive_execution(executionArn=arn)
        except (ClientError, BotoCoreError) as exc:
            raise AwsError.wrap("RedriveExecution", exc) from exc

    async def locate(
        self, txn_id: str, route: str | None = None
    ) -> tuple[str, dict[str, Any]] | None:
        """Find a transaction started by any instance: (route, DescribeExecution), or None.

        Without ``route``, it is read from the process data object's metadata; without one
        (object expired, route renamed), each configured state machine is tried.
        """
        if route is not None:
            return await self._describe_first([route], txn_id)
        candidates = [name for name, settings in self.routes.items() if settings.describable]
        started_on = await self.process_data.route_of(txn_id)
        if started_on is not None and started_on in self.routes:
            candidates = [started_on]
        return await self._describe_first(candidates, txn_id)

    async def _describe_first(
        self, candidates: list[str], txn_id: str
    ) -> tuple[str, dict[str, Any]] | None:
        tried: set[str] = set()
        for route in candidates:
            if not self.routes[route].describable:
                continue
            arn = self.execution_arn(route, txn_id)
            if arn in tried:
                continue
            tried.add(arn)
            try:
                return route, await self.describe_shared(arn)
            except AwsError as exc:
                if exc.code not in ("ExecutionDoesNotExist", "StateMachineDoesNotExist"):
                    raise
        return None
