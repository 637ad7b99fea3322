"""A lightweight stand-in for Step Functions and S3, for load runs moto cannot drive.

moto executes a few state machines a second on this kind of machine; holding thousands of
requests needs thousands of running executions. This endpoint answers exactly what the
daemon calls for a ``body`` route: S3 ``PutObject`` and ``HeadBucket``, Step Functions
``StartExecution`` and ``DescribeExecution``, in the AWS wire formats, keeping nothing
but a record per execution. Each execution behaves like the Hello workflow: it ends
``waitSeconds`` (from its input) after it started, or, when the stand-in is *gated*, once
:meth:`StepFunctionsStandIn.release` is called; at that moment its completion, in the Notify
states' shape, is handed to the local broker on ``<topic_root>/<subtopic>/<name>``, and that
moment is its stop time (``stopped_at``, this machine's wall clock). It enforces AWS's
quotas as the local stack does: Step Functions' token buckets (a throttled call gets
``ThrottlingException``), and IoT Core's payload limit on the completions it publishes (one
over it is not published, as the Notify state's publish would fail); the broker applies the
per-connection limits to their deliveries. Its events are counted in :attr:`quota_events`.

Only ``notifier bench`` uses it; it never runs against AWS, and the daemon talks to it with
the same client code it uses for AWS.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from notifier.lifecycle import Service
from notifier.local.quotas import QuotaSettings
from notifier.local.throttling import THROTTLING_ERROR, QuotaEvents, StepFunctionsThrottle
from notifier.topics import completion_topic

if TYPE_CHECKING:
    from notifier.local.broker import LocalBroker

log = logging.getLogger("notifier.local.sfn_standin")

HELLO_RESULT = "Hello 102 Class"
JSON_1_0 = "application/x-amz-json-1.0"


@dataclass(eq=False)
class StandInExecution:
    arn: str
    name: str
    state_machine_arn: str
    input: dict[str, Any]
    started_at: float = field(default_factory=time.time)
    stopped_at: float | None = None

    @property
    def output(self) -> dict[str, Any]:
        return {**self.input, "taskresult": HELLO_RESULT}

    def describe(self) -> dict[str, Any]:
        description: dict[str, Any] = {
            "executionArn": self.arn,
            "stateMachineArn": self.state_machine_arn,
            "name": self.name,
            "status": "RUNNING" if self.stopped_at is None else "SUCCEEDED",
            "startDate": self.started_at,
            "input": json.dumps(self.input),
        }
        if self.stopped_at is not None:
            description["stopDate"] = self.stopped_at
            description["output"] = json.dumps(self.output)
        return description


class StepFunctionsStandIn(Service):
    """The endpoint, on ``host`` and a free port (:attr:`url` once started)."""

    def __init__(
        self,
        host: str,
        broker: LocalBroker,
        topic_root: str,
        *,
        gated: bool = False,
        quotas: QuotaSettings | None = None,
    ) -> None:
        self.host = host
        self.broker = broker
        self.topic_root = topic_root
        self.gated = gated
        self.quotas = quotas or QuotaSettings()
        self.quota_events = QuotaEvents()
        self._throttle = (
            StepFunctionsThrottle(self.quotas.sfn, self.quota_events)
            if self.quotas.enabled
            else None
        )
        self.executions: dict[str, StandInExecution] = {}
        self.started = 0
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._publishes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    def stopped_at(self, name: str) -> float | None:
        execution = self.executions.get(name)
        return execution.stopped_at if execution is not None else None

    async def start(self) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/", self._step_functions)
        app.router.add_route("*", "/{path:.*}", self._s3)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, backlog=1024)
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started

    async def stop(self) -> None:
        for task in list(self._publishes):
            task.cancel()
        await asyncio.gather(*self._publishes, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    def release(self, spread: float) -> int:
        """End every running execution, spread evenly over ``spread`` seconds from now in
        the order they started; returns how many."""
        running = [e for e in self.executions.values() if e.stopped_at is None]
        loop = asyncio.get_running_loop()
        step = spread / len(running) if running else 0.0
        for i, execution in enumerate(running):
            loop.call_later(i * step, self._complete, execution)
        return len(running)

    def _complete(self, execution: StandInExecution) -> None:
        if execution.stopped_at is not None:
            return
        subtopic = execution.input.get("subtopic", "default")
        execution.stopped_at = now = time.time()
        payload = {
            "txnId": execution.name,
            "finishedAt": _iso(now),
            "executionArn": execution.arn,
            "stateMachine": execution.state_machine_arn.rpartition(":")[2],
            "status": "SUCCEEDED",
            "output": execution.output,
        }
        topic = completion_topic(self.topic_root, subtopic, execution.name)
        body = json.dumps(payload).encode()
        if self.quotas.enabled and len(body) > self.quotas.iot_payload:
            self.quota_events.record(
                "iot_payload_refused",
                f"the completion of {execution.name} ({len(body)} bytes) is over IoT Core's "
                f"payload limit ({self.quotas.iot_payload} bytes): not published",
            )
            return
        task = asyncio.get_running_loop().create_task(self.broker.publish(topic, body))
        self._publishes.add(task)
        task.add_done_callback(self._publishes.discard)

    async def _step_functions(self, request: web.Request) -> web.Response:
        target = request.headers.get("X-Amz-Target", "")
        if not target:
            return await self._s3(request)
        try:
            body = json.loads(await request.read() or b"{}")
        except json.JSONDecodeError:
            return _sfn_error("SerializationException", "the body is not JSON")
        operation = target.rpartition(".")[2]
        if self._throttle is not None and not self._throttle.admit(operation):
            return _sfn_error(THROTTLING_ERROR["__type"], THROTTLING_ERROR["message"])
        if operation == "StartExecution":
            return self._start_execution(body)
        if operation == "DescribeExecution":
            execution = self.executions.get(str(body.get("executionArn", "")).rpartition(":")[2])
            if execution is None or execution.arn != body.get("executionArn"):
                return _sfn_error("ExecutionDoesNotExist", f"{body.get('executionArn')}")
            return _sfn_json(execution.describe())
        return _sfn_error("UnknownOperationException", f"the stand-in does not do {operation}")

    def _start_execution(self, body: dict[str, Any]) -> web.Response:
        machine, name = str(body.get("stateMachineArn", "")), str(body.get("name", ""))
        try:
            execution_input = json.loads(body.get("input") or "{}")
        except json.JSONDecodeError:
            return _sfn_error("InvalidExecutionInput", "input is not JSON")
        if ":stateMachine:" not in machine or not name or not isinstance(execution_input, dict):
            return _sfn_error("ValidationException", "stateMachineArn, name and input required")
        existing = self.executions.get(name)
        if existing is not None:
            if existing.input != execution_input:
                return _sfn_error("ExecutionAlreadyExists", f"execution {name} already exists")
            return _sfn_json({"executionArn": existing.arn, "startDate": existing.started_at})
        prefix, _, machine_name = machine.rpartition(":stateMachine:")
        execution = StandInExecution(
            f"{prefix}:execution:{machine_name}:{name}", name, machine, execution_input
        )
        self.executions[name] = execution
        self.started += 1
        if not self.gated:
            wait = execution_input.get("waitSeconds")
            seconds = float(wait) if isinstance(wait, int | float) else 0.0
            valid = math.isfinite(seconds) and seconds >= 0
            asyncio.get_running_loop().call_later(
                seconds if valid else 0.0, self._complete, execution
            )
        return _sfn_json({"executionArn": execution.arn, "startDate": execution.started_at})

    async def _s3(self, request: web.Request) -> web.Response:
        """Path-style S3: PutObject is accepted and dropped, HeadBucket says the bucket is
        there; anything else is refused."""
        await request.read()
        bucket, _, key = request.match_info.get("path", "").partition("/")
        if request.method == "PUT" and bucket and key:
            return web.Response(status=200, headers={"ETag": '"0"'})
        if request.method == "HEAD" and bucket and not key:
            return web.Response(status=200)
        return web.Response(
            status=501,
            content_type="application/xml",
            text="<Error><Code>NotImplemented</Code>"
            "<Message>the stand-in does only PutObject and HeadBucket</Message></Error>",
        )


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="microseconds")


def _sfn_json(body: dict[str, Any]) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), content_type=JSON_1_0)


def _sfn_error(code: str, message: str) -> web.Response:
    return web.Response(
        status=400,
        body=json.dumps({"__type": code, "message": message}).encode(),
        content_type=JSON_1_0,
    )
