"""The AWS calls behind a transaction: the S3 process data object and the execution itself."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from notifier.aws.clients import error_code
from notifier.aws.errors import AwsError
from notifier.aws.read_budget import BACKGROUND, ReadBudget
from notifier.aws.sfn_calls import StartPacer, read_within, retry_throttled
from notifier.config import DaemonSettings, RouteSettings
from notifier.requests.listing import InvalidPageTokenError, Page, list_page
from notifier.requests.waiters import Completion, Status, utcnow
from notifier.tracing import TRACE_CONTEXT_KEY, Tracing

log = logging.getLogger(__name__)

ROUTE_METADATA = "notifier-route"
FINGERPRINT_METADATA = "notifier-request-sha256"
"""The SHA-256 of the request a keyed transaction was started with (see
:mod:`notifier.requests.idempotency`), kept on its process data object."""
READ_PATIENCE = 2.0
"""Seconds a request that needs a read to be answered at all (a re-attach to a transaction
this instance does not know, a listing, the dashboard's details) waits for it, its turns
in the read budget and its retries after throttling included."""
MAX_INPUT_BYTES = 262_144
"""Step Functions' limit on an execution's input (UTF-8)."""
# S3's answers to a conditional write that found the object there (or being written).
_EXISTS_CODES = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")
# How Step Functions names a task state's IoT publish in an execution's history.
IOT_PUBLISH = ("aws-sdk:iotdataplane", "publish")
# Events read back from an execution's end to find its completion's publish.
PUBLISH_LOOKBACK = 50
STARTED_BY = "startedBy"
"""The field of an execution's input naming the API key that started it."""


class IdempotencyConflictError(Exception):
    """The idempotency key is taken by a request with another body."""


class InputTooLargeError(ValueError):
    """An execution input larger than Step Functions accepts."""


@dataclass(frozen=True)
class KeyedStart:
    """How a keyed transaction's execution was found: started (again) by this instance,
    or already there, as DescribeExecution told."""

    started_at: datetime | None = None
    description: dict[str, Any] | None = None


def execution_arn(state_machine_arn: str, name: str, *, express: bool = False) -> str:
    """arn:...:stateMachine:<machine> -> arn:...:execution:<machine>:<name>; for an Express
    state machine arn:...:express:<machine>:<name>, which its executions' ARNs begin with."""
    prefix, _, machine = state_machine_arn.rpartition(":stateMachine:")
    kind = "express" if express else "execution"
    return f"{prefix}:{kind}:{machine}:{name}"


UNNOTIFIED_KEYS = frozenset({"result", "notifyError"})
"""The output of a workflow whose Notify states could not publish: ``{"result": <the
result>, "notifyError": {...}}``, the mark the status forwarder reads."""


def workflow_result(output: Any) -> Any:
    """The workflow's result in its execution's output (unwrapped from the unnotified mark)."""
    if (
        isinstance(output, dict)
        and output.keys() == UNNOTIFIED_KEYS
        and isinstance(output["notifyError"], dict)
    ):
        return output["result"]
    return output


def completion_from_description(description: dict[str, Any], via: str = "poll") -> Completion:
    """The completion a DescribeExecution answer of a final status tells."""
    output = description.get("output")
    return Completion(
        status=Status.parse(description.get("status")),
        via=via,
        execution_arn=description.get("executionArn"),
        output=workflow_result(json.loads(output)) if output is not None else None,
        error=description.get("error"),
        cause=description.get("cause"),
        stop_date=description.get("stopDate"),
        size=len(output) if output is not None else 0,
    )


ApiCall = Callable[..., Awaitable[dict[str, Any]]]
"""An API operation awaited like the aiobotocore client's method for it."""


class Executions:
    """Starts, describes and stops executions, and keeps their process data in S3.

    ``put_object`` and ``start_execution``, the two calls of every start, default to the
    clients' own methods (see :mod:`notifier.aws.fast_calls` for cheaper ones). Every read of
    Step Functions draws on ``budget`` (:mod:`notifier.aws.read_budget`); each StartExecution
    waits its turn at ``starts`` (:class:`~notifier.aws.sfn_calls.StartPacer`), and one that
    is throttled all the same is tried again, with backoff, until the request's deadline.
    """

    def __init__(
        self,
        s3: Any,
        sfn: Any,
        bucket: str,
        subtopic: str,
        routes: Callable[[], Mapping[str, RouteSettings]],
        *,
        budget: ReadBudget | None = None,
        starts: StartPacer | None = None,
        on_throttled: Callable[[str], None] | None = None,
        put_object: ApiCall | None = None,
        start_execution: ApiCall | None = None,
        start_sync_execution: ApiCall | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        """``routes`` gives the routes in force (they change when the daemon reloads);
        ``budget`` is the share of the account's reads and ``starts`` of its starts (None:
        ones of the default rates);
        ``on_throttled`` is told of each call Step Functions throttled, by API;
        ``tracing`` makes a span of each call that starts an execution, and puts the trace
        context in the execution's input."""
        self._s3 = s3
        self._sfn = sfn
        self._put_object: ApiCall = put_object or s3.put_object
        self._start_execution: ApiCall = start_execution or sfn.start_execution
        # Blocks until an Express workflow ends: a client of its own, never retried.
        self._start_sync_execution: ApiCall | None = start_sync_execution
        self.bucket = bucket
        self.subtopic = subtopic
        self.subtopic_for: Callable[[str], Awaitable[str]] = self._own_subtopic
        """The subtopic a new execution for a transaction id is to publish its completion to
        (the connection of the MQTT pool it is given, once one has room)."""
        self._routes = routes
        self.budget = budget or ReadBudget(DaemonSettings().sfn_read_rate)
        self.starts = starts or StartPacer(DaemonSettings().sfn_start_rate)
        self.throttled: Counter[str] = Counter()
        """Step Functions calls answered with throttling, by API."""
        self._on_throttled = on_throttled
        self.tracing = tracing or Tracing()

    @property
    def routes(self) -> Mapping[str, RouteSettings]:
        return self._routes()

    def execution_arn(self, route: str, txn_id: str) -> str:
        settings = self.routes[route]
        return execution_arn(settings.state_machine, txn_id, express=settings.workflow == "express")

    async def check_reachable(self) -> str | None:
        """None if the process data bucket answers (AWS reachable, access granted), else why."""
        try:
            await self._s3.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            return str(exc)
        return None

    def check_input_size(self, route: str, body: dict[str, Any], owner: str | None = None) -> None:
        """Raise :class:`InputTooLargeError` if the input of the route's execution for
        ``body`` is too large whatever its subtopic (which is only chosen when it starts)."""
        _encoded(self._input(route, "", body, "", owner))

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
        await self._put_process_data(route, txn_id, body)
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
        try:
            await self._put_process_data(route, txn_id, body, fingerprint)
        except AwsError as exc:
            if exc.code not in _EXISTS_CODES:
                raise
            stored = await self._stored_fingerprint(txn_id)
            if stored is not None and stored != fingerprint:
                raise IdempotencyConflictError(txn_id) from None
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
            if not isinstance(started_with, dict) or _as_given(started_with) != _as_given(body):
                raise IdempotencyConflictError(txn_id)
        return KeyedStart(description=description)

    async def store_for_sync(
        self, route: str, txn_id: str, body: dict[str, Any], fingerprint: str | None = None
    ) -> None:
        """Store an Express start's body, before :meth:`run_sync`. With a ``fingerprint``
        (a keyed start) only if there is none, and an object there with another one is an
        :class:`IdempotencyConflictError`. Express keeps no execution to find by its name:
        the same key and body run the workflow again."""
        try:
            await self._put_process_data(route, txn_id, body, fingerprint)
        except AwsError as exc:
            if fingerprint is None or exc.code not in _EXISTS_CODES:
                raise
            stored = await self._stored_fingerprint(txn_id)
            if stored is not None and stored != fingerprint:
                raise IdempotencyConflictError(txn_id) from None

    async def run_sync(
        self, route: str, txn_id: str, body: dict[str, Any], owner: str | None = None
    ) -> dict[str, Any]:
        """StartSyncExecution of the route's Express state machine, named ``txn_id``: its
        answer once the workflow ended (shaped as DescribeExecution's)."""
        settings = self.routes[route]
        call = self._start_sync_execution or self._sfn.start_sync_execution
        try:
            return dict(
                await call(
                    stateMachineArn=settings.state_machine,
                    name=txn_id,
                    input=_encoded(await self._execution_input(route, txn_id, body, owner)),
                )
            )
        except (ClientError, BotoCoreError) as exc:
            raise AwsError.wrap("StartSyncExecution", exc) from exc

    async def _put_process_data(
        self, route: str, txn_id: str, body: dict[str, Any], fingerprint: str | None = None
    ) -> None:
        metadata = {ROUTE_METADATA: route}
        conditional: dict[str, str] = {}
        if fingerprint is not None:
            metadata[FINGERPRINT_METADATA] = fingerprint
            conditional["IfNoneMatch"] = "*"
        try:
            with self.tracing.span("S3 PutObject", _call_attributes(self._put_object)):
                await self._put_object(
                    Bucket=self.bucket,
                    Key=txn_id,
                    Body=json.dumps(body).encode(),
                    ContentType="application/json",
                    ServerSideEncryption="AES256",
                    Metadata=metadata,
                    **conditional,
                )
        except (ClientError, BotoCoreError) as exc:
            raise AwsError.wrap("PutObject", exc) from exc

    async def _stored_fingerprint(self, txn_id: str) -> str | None:
        """The fingerprint on the process data object; None if it has none (written by
        something else) or is gone."""
        try:
            head = await self._s3.head_object(Bucket=self.bucket, Key=txn_id)
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise AwsError.wrap("HeadObject", exc) from exc
        except BotoCoreError as exc:
            raise AwsError.wrap("HeadObject", exc) from exc
        stored = head.get("Metadata", {}).get(FINGERPRINT_METADATA)
        return str(stored) if stored is not None else None

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
        execution_input = await self._execution_input(route, txn_id, body, owner)
        encoded = _encoded(execution_input)
        with self.tracing.span("StepFunctions StartExecution", _call_attributes(
            self._start_execution
        )):  # fmt: skip
            if carrier := self.tracing.carrier():
                encoded = json.dumps({**execution_input, TRACE_CONTEXT_KEY: carrier})
            call = functools.partial(
                self._start_execution,
                stateMachineArn=self.routes[route].state_machine,
                name=txn_id,
                input=encoded,
            )
            await retry_throttled(
                "StartExecution",
                call,
                self._count_throttled,
                deadline,
                done_when_again="ExecutionAlreadyExists",
                turn=functools.partial(self.starts.turn, deadline),
            )

    async def _own_subtopic(self, txn_id: str) -> str:
        return self.subtopic

    async def _execution_input(
        self, route: str, txn_id: str, body: dict[str, Any], owner: str | None
    ) -> dict[str, Any]:
        return self._input(route, txn_id, body, await self.subtopic_for(txn_id), owner)

    def _input(
        self, route: str, txn_id: str, body: dict[str, Any], subtopic: str, owner: str | None
    ) -> dict[str, Any]:
        """The body (or, for a sidecar route, where it is stored) with the subtopic to
        publish the completion to and the API key that started it (``startedBy``), for
        every instance to read."""
        added: dict[str, Any] = {"subtopic": subtopic}
        if owner is not None:
            added[STARTED_BY] = owner
        if self.routes[route].input == "sidecar":
            return {"processData": txn_id, **added}
        return {**body, **added}

    async def _read(
        self,
        api: str,
        call: Callable[[], Awaitable[Any]],
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
        parameters = {
            "executionArn": arn,
            "maxResults": limit,
            **({"nextToken": token} if token else {}),
        }
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
        events = {event.get("id"): event for event in await self.last_events(arn, PUBLISH_LOOKBACK)}
        for event in events.values():
            details = event.get("taskSucceededEventDetails") or {}
            if (details.get("resourceType"), details.get("resource")) != IOT_PUBLISH:
                continue
            started = events.get(event.get("previousEventId"), {})
            scheduled = events.get(started.get("previousEventId"), {})
            parameters = (scheduled.get("taskScheduledEventDetails") or {}).get("parameters")
            try:
                if json.loads(parameters or "{}").get("Topic") == topic:
                    return True
            except (json.JSONDecodeError, AttributeError):
                continue
        return False

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

    async def read_process_data(self, txn_id: str) -> Any:
        try:
            response = await self._s3.get_object(Bucket=self.bucket, Key=txn_id)
            async with response["Body"] as stream:
                data = await stream.read()
        except (ClientError, BotoCoreError) as exc:
            raise AwsError.wrap("GetObject", exc) from exc
        return json.loads(data)

    async def listing(
        self, routes: list[str], status: str | None, limit: int, token: str | None
    ) -> Page:
        """A page of ``routes``' executions (:func:`~notifier.requests.listing.list_page`)."""
        return await list_page(self._list_executions, self.routes, routes, status, limit, token)

    async def _list_executions(self, **parameters: Any) -> dict[str, Any]:
        """ListExecutions for someone waiting (within :data:`READ_PATIENCE`)."""
        return await self._read(
            "ListExecutions",
            functools.partial(self._sfn.list_executions, **parameters),
            deadline=time.monotonic(),
            patience=READ_PATIENCE,
        )

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
        try:
            head = await self._s3.head_object(Bucket=self.bucket, Key=txn_id)
            route = head.get("Metadata", {}).get(ROUTE_METADATA)
            if route in self.routes:
                candidates = [route]
        except ClientError as exc:
            if error_code(exc) not in ("404", "NoSuchKey", "NotFound"):
                raise AwsError.wrap("HeadObject", exc) from exc
        except BotoCoreError as exc:
            raise AwsError.wrap("HeadObject", exc) from exc
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


def _encoded(execution_input: dict[str, Any]) -> str:
    """``execution_input`` as JSON, or :class:`InputTooLargeError` when Step Functions would
    refuse it."""
    encoded = json.dumps(execution_input)
    size = len(encoded)  # bytes too: ASCII, as json.dumps escapes the rest
    if size > MAX_INPUT_BYTES:
        raise InputTooLargeError(
            f"the execution input would be {size} bytes; Step Functions accepts at most "
            f"{MAX_INPUT_BYTES}"
        )
    return encoded


def _as_given(execution_input: dict[str, Any]) -> dict[str, Any]:
    """An execution's input without what the daemon adds to a request's body."""
    return {
        key: value
        for key, value in execution_input.items()
        if key not in ("subtopic", STARTED_BY, TRACE_CONTEXT_KEY)
    }


def started_by(description: dict[str, Any]) -> str | None:
    """The name of the API key that started a described execution (its input's
    ``startedBy``); None if none did (keys off, or started by something else)."""
    try:
        execution_input = json.loads(description.get("input") or "{}")
    except json.JSONDecodeError:
        return None
    owner = execution_input.get(STARTED_BY) if isinstance(execution_input, dict) else None
    return owner if isinstance(owner, str) else None


def _call_attributes(call: ApiCall) -> dict[str, str | int | bool]:
    """A span's attributes for ``call``: whether the fast path makes it (it may still hand
    one call to the AWS SDK after an error)."""
    return {"notifier.fast_path": bool(getattr(call, "enabled", False))}
