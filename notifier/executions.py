"""The AWS calls behind a transaction: the S3 process data object and the execution itself."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from notifier.aws import error_code
from notifier.config import RouteSettings
from notifier.waiters import Completion, Status, utcnow

log = logging.getLogger(__name__)

ROUTE_METADATA = "notifier-route"
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
    }
)


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


def execution_arn(state_machine_arn: str, name: str) -> str:
    """arn:...:stateMachine:<machine> -> arn:...:execution:<machine>:<name>."""
    prefix, _, machine = state_machine_arn.rpartition(":stateMachine:")
    return f"{prefix}:execution:{machine}:{name}"


def completion_from_description(description: dict[str, Any], via: str = "poll") -> Completion:
    """The completion a DescribeExecution answer of a final status tells."""
    output = description.get("output")
    return Completion(
        status=Status.parse(description.get("status")),
        via=via,
        execution_arn=description.get("executionArn"),
        output=json.loads(output) if output is not None else None,
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
        put_object: ApiCall | None = None,
        start_execution: ApiCall | None = None,
    ) -> None:
        """``routes`` gives the routes in force (they change when the daemon reloads)."""
        self._s3 = s3
        self._sfn = sfn
        self._put_object: ApiCall = put_object or s3.put_object
        self._start_execution: ApiCall = start_execution or sfn.start_execution
        self.bucket = bucket
        self.subtopic = subtopic
        self._routes = routes

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

    async def start(self, route: str, txn_id: str, body: dict[str, Any]) -> datetime:
        """Store ``body`` under ``txn_id`` and start the route's execution named ``txn_id``.

        Returns when StartExecution returned. Retrying with the same id and body is
        idempotent: the same S3 object, and Step Functions accepts the same name and input.
        """
        settings = self.routes[route]
        try:
            await self._put_object(
                Bucket=self.bucket,
                Key=txn_id,
                Body=json.dumps(body).encode(),
                ContentType="application/json",
                ServerSideEncryption="AES256",
                Metadata={ROUTE_METADATA: route},
            )
        except (ClientError, BotoCoreError) as exc:
            raise AwsError.wrap("PutObject", exc) from exc
        if settings.input == "sidecar":
            execution_input: dict[str, Any] = {"processData": txn_id, "subtopic": self.subtopic}
        else:
            execution_input = {**body, "subtopic": self.subtopic}
        try:
            await self._start_execution(
                stateMachineArn=settings.state_machine,
                name=txn_id,
                input=json.dumps(execution_input),
            )
        except (ClientError, BotoCoreError) as exc:
            raise AwsError.wrap("StartExecution", exc) from exc
        return utcnow()

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

    async def locate(self, txn_id: str) -> tuple[str, dict[str, Any]] | None:
        """Find a transaction started by any instance: (route, DescribeExecution), or None.

        The route is read from the process data object's metadata; without one (object
        expired, route renamed), each configured state machine is tried.
        """
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
        tried: set[str] = set()
        for route in candidates:
            arn = self.execution_arn(route, txn_id)
            if arn in tried:
                continue
            tried.add(arn)
            try:
                return route, await self.describe(arn)
            except AwsError as exc:
                if exc.code not in ("ExecutionDoesNotExist", "StateMachineDoesNotExist"):
                    raise
        return None
