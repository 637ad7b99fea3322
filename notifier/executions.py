"""The AWS calls behind a transaction: the S3 process data object and the execution itself."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from notifier.aws import error_code
from notifier.config import RouteSettings
from notifier.ratelimit import RateLimiter
from notifier.waiters import Completion, Status, utcnow

log = logging.getLogger(__name__)

ROUTE_METADATA = "notifier-route"
FINGERPRINT_METADATA = "notifier-request-sha256"
"""The SHA-256 of the request a keyed transaction was started with (see
:mod:`notifier.idempotency`), kept on its process data object."""
RATE_LIMITED = "RateLimited"
"""The code of an :class:`AwsError` for a DescribeExecution this daemon did not make because
its own ``reconcile_rate`` was spent: a 503 like AWS's throttling."""
DESCRIBE_PATIENCE = 2.0
"""Seconds a request waits for its turn at the DescribeExecution rate limit."""
LIST_LIMIT = 100
"""Executions a listing page has unless asked for fewer or more, up to the next."""
MAX_LIST_LIMIT = 1000
LIST_STATUSES = ("RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED", "PENDING_REDRIVE")
"""What ListExecutions filters by."""
# S3's answers to a conditional write that found the object there (or being written).
_EXISTS_CODES = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")
# How Step Functions names a task state's IoT publish in an execution's history.
IOT_PUBLISH = ("aws-sdk:iotdataplane", "publish")
# Events read back from an execution's end to find its completion's publish.
PUBLISH_LOOKBACK = 50
# What botocore's retry handler treats as throttling; reaching us means its retries ran out.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        RATE_LIMITED,
    }
)

STARTED_BY = "startedBy"
"""The field of an execution's input naming the API key that started it."""


class AwsError(Exception):
    def __init__(self, operation: str, code: str, message: str) -> None:
        super().__init__(f"{operation}: {code}: {message}")
        self.operation = operation
        self.code = code
        self.message = message

    @property
    def throttled(self) -> bool:
        return self.code in THROTTLING_CODES

    @classmethod
    def wrap(cls, operation: str, exc: Exception) -> AwsError:
        if isinstance(exc, ClientError):
            message = str(exc.response.get("Error", {}).get("Message", ""))
            return cls(operation, error_code(exc) or "Unknown", message)
        return cls(operation, type(exc).__name__, str(exc))


class IdempotencyConflictError(Exception):
    """The idempotency key is taken by a request with another body."""


class InvalidPageTokenError(ValueError):
    """A ``nextToken`` this daemon did not hand out (or for routes since removed)."""


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    """ListExecutions items, each with the ``route`` it was listed under."""
    next_token: str | None


@dataclass(frozen=True)
class KeyedStart:
    """How a keyed transaction's execution was found: started (again) by this instance,
    or already there, as DescribeExecution told."""

    started_at: datetime | None = None
    description: dict[str, Any] | None = None


def execution_arn(state_machine_arn: str, name: str) -> str:
    """arn:...:stateMachine:<machine> -> arn:...:execution:<machine>:<name>."""
    prefix, _, machine = state_machine_arn.rpartition(":stateMachine:")
    return f"{prefix}:execution:{machine}:{name}"


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
    clients' own methods (see :mod:`notifier.fast_calls` for cheaper ones).
    """

    def __init__(
        self,
        s3: Any,
        sfn: Any,
        bucket: str,
        subtopic: str,
        routes: Callable[[], Mapping[str, RouteSettings]],
        *,
        limiter: RateLimiter | None = None,
        put_object: ApiCall | None = None,
        start_execution: ApiCall | None = None,
    ) -> None:
        """``routes`` gives the routes in force (they change when the daemon reloads);
        ``limiter`` is the rate limit every DescribeExecution shares (None: none)."""
        self._s3 = s3
        self._sfn = sfn
        self._put_object: ApiCall = put_object or s3.put_object
        self._start_execution: ApiCall = start_execution or sfn.start_execution
        self.bucket = bucket
        self.subtopic = subtopic
        self.subtopic_for: Callable[[str], str] = lambda txn_id: subtopic
        """The subtopic a new execution for a transaction id is to publish its completion to
        (the connection of the MQTT pool it is given)."""
        self._routes = routes
        self.limiter = limiter

    @property
    def routes(self) -> Mapping[str, RouteSettings]:
        return self._routes()

    def execution_arn(self, route: str, txn_id: str) -> str:
        return execution_arn(self.routes[route].state_machine, txn_id)

    async def check_reachable(self) -> str | None:
        """None if the process data bucket answers (AWS reachable, access granted), else why."""
        try:
            await self._s3.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            return str(exc)
        return None

    async def start(
        self, route: str, txn_id: str, body: dict[str, Any], owner: str | None = None
    ) -> datetime:
        """Store ``body`` under ``txn_id`` and start the route's execution named ``txn_id``.

        Returns when StartExecution returned. Retrying with the same id and body is
        idempotent: the same S3 object, and Step Functions accepts the same name and input.
        """
        await self._put_process_data(route, txn_id, body)
        await self._start_named(route, txn_id, body, owner)
        return utcnow()

    async def start_keyed(
        self,
        route: str,
        txn_id: str,
        body: dict[str, Any],
        fingerprint: str,
        owner: str | None = None,
    ) -> KeyedStart:
        """Start a keyed transaction, or find it started: safe to call again and again, from
        any instance, and never overwriting what is stored.

        The process data object is written only if there is none (``If-None-Match: *``),
        with the request's fingerprint; one already there with another fingerprint means
        another request took the key (:class:`IdempotencyConflictError`). Step Functions
        settles the rest: StartExecution with the same name and input returns the running
        execution; otherwise the execution is there already (``ExecutionAlreadyExists``)
        and is described, and for a body route its input must be this body.
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
            await self._start_named(route, txn_id, body, owner)
        except AwsError as exc:
            if exc.code != "ExecutionAlreadyExists":
                raise
        else:
            return KeyedStart(started_at=utcnow())
        description = await self.describe_shared(self.execution_arn(route, txn_id))
        if self.routes[route].input == "body":
            try:
                started_with = json.loads(description.get("input") or "{}")
            except json.JSONDecodeError:
                started_with = None
            if not isinstance(started_with, dict) or _as_given(started_with) != _as_given(body):
                raise IdempotencyConflictError(txn_id)
        return KeyedStart(description=description)

    async def _put_process_data(
        self, route: str, txn_id: str, body: dict[str, Any], fingerprint: str | None = None
    ) -> None:
        metadata = {ROUTE_METADATA: route}
        conditional: dict[str, str] = {}
        if fingerprint is not None:
            metadata[FINGERPRINT_METADATA] = fingerprint
            conditional["IfNoneMatch"] = "*"
        try:
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
        self, route: str, txn_id: str, body: dict[str, Any], owner: str | None
    ) -> None:
        """StartExecution of the route's state machine, named ``txn_id``; its input names
        the API key that started it (``startedBy``), for every instance to read."""
        settings = self.routes[route]
        added: dict[str, Any] = {"subtopic": self.subtopic_for(txn_id)}
        if owner is not None:
            added[STARTED_BY] = owner
        if settings.input == "sidecar":
            execution_input: dict[str, Any] = {"processData": txn_id, **added}
        else:
            execution_input = {**body, **added}
        try:
            await self._start_execution(
                stateMachineArn=settings.state_machine,
                name=txn_id,
                input=json.dumps(execution_input),
            )
        except (ClientError, BotoCoreError) as exc:
            raise AwsError.wrap("StartExecution", exc) from exc

    async def describe_shared(self, arn: str) -> dict[str, Any]:
        """DescribeExecution within the shared rate limit, for a request that waits on it:
        raises an :class:`AwsError` ``RateLimited`` when no turn came within
        :data:`DESCRIBE_PATIENCE` seconds."""
        if self.limiter is not None and not await self.limiter.try_acquire(DESCRIBE_PATIENCE):
            raise AwsError(
                "DescribeExecution", RATE_LIMITED, "this daemon's reconcile_rate is spent"
            )
        return await self.describe(arn)

    async def describe(self, arn: str) -> dict[str, Any]:
        try:
            return dict(await self._sfn.describe_execution(executionArn=arn))
        except (ClientError, BotoCoreError) as exc:
            raise AwsError.wrap("DescribeExecution", exc) from exc

    async def history(self, arn: str, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """The first ``limit`` events of GetExecutionHistory, and whether there are more."""
        events: list[dict[str, Any]] = []
        token = None
        try:
            while len(events) < limit:
                page = await self._sfn.get_execution_history(
                    executionArn=arn,
                    maxResults=min(1000, limit - len(events)),
                    **({"nextToken": token} if token else {}),
                )
                events.extend(page.get("events", []))
                token = page.get("nextToken")
                if not token:
                    return events, False
        except (ClientError, BotoCoreError) as exc:
            raise AwsError.wrap("GetExecutionHistory", exc) from exc
        return events, True

    async def definition_of(self, arn: str) -> dict[str, Any]:
        """The state machine definition the execution runs (DescribeStateMachineForExecution)."""
        try:
            described = await self._sfn.describe_state_machine_for_execution(executionArn=arn)
        except (ClientError, BotoCoreError) as exc:
            raise AwsError.wrap("DescribeStateMachineForExecution", exc) from exc
        definition: dict[str, Any] = json.loads(described["definition"])
        return definition

    async def published(self, arn: str, topic: str) -> bool:
        """Whether the execution published to ``topic`` over IoT (a task state's
        ``aws-sdk:iotdataplane:publish`` that succeeded), from the end of its history."""
        try:
            page = await self._sfn.get_execution_history(
                executionArn=arn, reverseOrder=True, maxResults=PUBLISH_LOOKBACK
            )
        except (ClientError, BotoCoreError) as exc:
            raise AwsError.wrap("GetExecutionHistory", exc) from exc
        events = {event.get("id"): event for event in page.get("events", [])}
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

    async def stop(self, arn: str) -> None:
        try:
            await self._sfn.stop_execution(
                executionArn=arn, error="Stopped", cause="stopped through the notifier API"
            )
        except (ClientError, BotoCoreError) as exc:
            raise AwsError.wrap("StopExecution", exc) from exc

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
        """Up to ``limit`` executions of ``routes``' state machines (each machine once, under
        the first of its routes), one route after the other, from where ``token`` left off.

        The token handed back names the route and ListExecutions' own token; raises
        :class:`InvalidPageTokenError` for one that does not fit ``routes``.
        """
        machines: dict[str, str] = {}
        for route in routes:
            machines.setdefault(self.routes[route].state_machine, route)
        order = list(machines.values())
        index, aws_token = 0, None
        if token is not None:
            route, aws_token = _read_token(token)
            if route not in order:
                raise InvalidPageTokenError("nextToken does not belong to this listing")
            index = order.index(route)
        items: list[dict[str, Any]] = []
        while index < len(order) and len(items) < limit:
            route = order[index]
            try:
                page = await self._sfn.list_executions(
                    stateMachineArn=self.routes[route].state_machine,
                    maxResults=limit - len(items),
                    **({"statusFilter": status} if status else {}),
                    **({"nextToken": aws_token} if aws_token else {}),
                )
            except ClientError as exc:
                if error_code(exc) == "InvalidToken":
                    raise InvalidPageTokenError("nextToken has expired or is invalid") from exc
                raise AwsError.wrap("ListExecutions", exc) from exc
            except BotoCoreError as exc:
                raise AwsError.wrap("ListExecutions", exc) from exc
            items.extend({**item, "route": route} for item in page.get("executions", []))
            aws_token = page.get("nextToken")
            if not aws_token:
                index += 1
        more = index < len(order)
        return Page(items, _write_token(order[index], aws_token) if more else None)

    async def locate(
        self, txn_id: str, route: str | None = None
    ) -> tuple[str, dict[str, Any]] | None:
        """Find a transaction started by any instance: (route, DescribeExecution), or None.

        Without ``route``, it is read from the process data object's metadata; without one
        (object expired, route renamed), each configured state machine is tried.
        """
        if route is not None:
            return await self._describe_first([route], txn_id)
        candidates = list(self.routes)
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


def _as_given(execution_input: dict[str, Any]) -> dict[str, Any]:
    """An execution's input without what the daemon adds to a request's body."""
    return {k: v for k, v in execution_input.items() if k not in ("subtopic", STARTED_BY)}


def started_by(description: dict[str, Any]) -> str | None:
    """The name of the API key that started a described execution (its input's
    ``startedBy``); None if none did (keys off, or started by something else)."""
    try:
        execution_input = json.loads(description.get("input") or "{}")
    except json.JSONDecodeError:
        return None
    owner = execution_input.get(STARTED_BY) if isinstance(execution_input, dict) else None
    return owner if isinstance(owner, str) else None


def _write_token(route: str, aws_token: str | None) -> str:
    raw = json.dumps({"route": route, "token": aws_token}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _read_token(token: str) -> tuple[str, str | None]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        route, aws_token = raw["route"], raw["token"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidPageTokenError("nextToken is not one this daemon handed out") from None
    if not isinstance(route, str) or not isinstance(aws_token, str | None):
        raise InvalidPageTokenError("nextToken is not one this daemon handed out")
    return route, aws_token
