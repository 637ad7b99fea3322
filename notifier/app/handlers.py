"""The HTTP API's handlers: starting, holding and answering transactions, and the operating
endpoints.

``POST /<route>`` starts a transaction and holds the request until its completion arrives
or the hold time ends (202 + Location). ``GET /executions/<txnId>`` re-attaches to any
transaction; ``POST /executions/<txnId>/stop`` stops it. Who may call each is declared where
the routes are added (:mod:`notifier.app.wiring`) and checked by a middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from datetime import datetime
from typing import Any

from aiohttp import web

from notifier import answers, bodies, openapi
from notifier.app.preferences import preferred_wait
from notifier.app.state import (
    ADMISSION,
    AWS_REACHABILITY,
    EXECUTIONS,
    INSTANCE_ID,
    LIVENESS,
    METRICS,
    MQTT,
    REGISTRY,
    SAFETY_NET,
    SETTINGS,
    SQS,
)
from notifier.executions import AwsError, completion_from_description
from notifier.ids import is_txn_id, new_txn_id
from notifier.logs import bind_transaction
from notifier.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from notifier.waiters import (
    Completion,
    RegistryFullError,
    Status,
    Transaction,
    utcnow,
)

log = logging.getLogger(__name__)

AWS_CHECK_SECONDS = 30.0


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    reachability = app[AWS_REACHABILITY]
    now = time.monotonic()
    if now - reachability.checked_at > AWS_CHECK_SECONDS:
        reachability.error = await app[EXECUTIONS].check_reachable()
        reachability.checked_at = now
    mqtt, sqs, liveness = app.get(MQTT), app.get(SQS), app.get(LIVENESS)
    mqtt_problem = liveness.problem if liveness is not None else None
    ready = app[ADMISSION].accepting and reachability.error is None
    # Without MQTT, completions still come from the queue and DescribeExecution sweeps:
    # slower, but every request is answered, so a load balancer should keep sending.
    degraded = (
        (mqtt is not None and not mqtt.connected)
        or mqtt_problem is not None
        or (sqs is not None and not sqs.healthy)
    )
    body = {
        "ready": ready,
        "state": "not ready" if not ready else "degraded" if degraded else "ready",
        "instanceId": app[INSTANCE_ID],
        "completion": app[SETTINGS].current.daemon.completion,
        "accepting": app[ADMISSION].accepting,
        "awsReachable": reachability.error is None,
        "awsError": reachability.error,
        "mqttTransport": mqtt.settings.transport if mqtt is not None else None,
        "mqttConnected": mqtt.connected if mqtt is not None else None,
        "mqttAuthError": mqtt.auth_error if mqtt is not None else None,
        "mqttTokenRefreshes": mqtt.refreshes if mqtt is not None else None,
        "mqttProblem": mqtt_problem,
        "mqttMissed": liveness.missed if liveness is not None else None,
        "sqsQueue": sqs.queue_url if sqs is not None else None,
        "sqsError": sqs.error if sqs is not None else None,
        "held": app[REGISTRY].held,
    }
    return web.json_response(body, status=200 if ready else 503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    return web.Response(body=metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE})


async def openapi_document(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS].current
    document = openapi.document(
        settings.routes, settings.http.require_api_key, settings.dashboard.enabled
    )
    return web.json_response(document)


async def start(request: web.Request) -> web.StreamResponse:
    """``POST /<route>``: store the body, start the execution, hold the request."""
    received_at = utcnow()
    app = request.app
    settings = app[SETTINGS].current
    registry = app[REGISTRY]
    executions = app[EXECUTIONS]
    route = request.match_info["route"]
    if route not in settings.routes:
        return answers.error(404, f"no route {route!r}")
    if (refusal := _refuse_if_busy(app)) is not None:
        return refusal
    body = await read_json_object(request, settings.http.max_body_bytes)
    if isinstance(body, web.Response):
        return body
    wait, preference = preferred_wait(
        request.headers.getall("Prefer", []), settings.http.default_wait, settings.http.max_wait
    )
    if (refusal := _refuse_if_busy(app)) is not None:  # again: the body took a while
        return refusal
    txn_id = new_txn_id()
    txn = registry.track(Transaction(txn_id, route, executions.execution_arn(route, txn_id)))
    bind_transaction(txn_id, txn.execution_arn)
    # Held before StartExecution: a fast workflow may complete before it returns.
    async with registry.hold(txn_id) as waiter:
        try:
            txn.started_at = await executions.start(route, txn_id, body)
        except AwsError as exc:
            registry.discard(txn_id)
            log.warning("POST /%s: %s", route, exc)
            return answers.aws_error(exc, settings.http.retry_after)
        return await _answer(request, txn, waiter, wait, received_at, preference)


async def reattach(request: web.Request) -> web.StreamResponse:
    """``GET /executions/<txnId>?wait=N``: the final answer, or 202 after N seconds."""
    received_at = utcnow()
    app = request.app
    settings = app[SETTINGS].current
    registry = app[REGISTRY]
    txn_id = request.match_info["txn_id"]
    bind_transaction(txn_id)
    if not is_txn_id(txn_id):
        return answers.error(404, f"no transaction {txn_id!r}")
    wait = settings.http.default_wait
    if "wait" in request.query:
        try:
            wait = float(request.query["wait"])
        except ValueError:
            wait = math.nan
        if not math.isfinite(wait) or wait < 0:
            return answers.error(400, "wait must be a non-negative number of seconds")
        wait = min(wait, settings.http.max_wait)
    if (refusal := _refuse_if_busy(app)) is not None:
        return refusal
    known = registry.get(txn_id)
    if known is None:
        try:
            located = await app[EXECUTIONS].locate(txn_id)
        except AwsError as exc:
            return answers.aws_error(exc, settings.http.retry_after)
        if located is None:
            return answers.error(404, f"no transaction {txn_id!r}")
        route, description = located
        registry.track(
            Transaction(
                txn_id,
                route,
                description["executionArn"],
                poll=_published_elsewhere(description, app[INSTANCE_ID]),
                asked_at=time.monotonic(),  # locating it described it
            )
        )
        if Status.parse(description["status"]).final:
            registry.resolve(txn_id, completion_from_description(description))
    elif (safety_net := app.get(SAFETY_NET)) is not None:
        await safety_net.on_reattach(known)
    txn = registry.get(txn_id)
    if txn is None:  # evicted while DescribeExecution ran; only with a tiny recent_completions
        return answers.error(503, "too busy; retry", {"Retry-After": "1"})
    if (refusal := _refuse_if_busy(app)) is not None:  # again: DescribeExecution took a while
        return refusal
    async with registry.hold(txn_id) as waiter:
        return await _answer(request, txn, waiter, wait, received_at, None)


async def stop(request: web.Request) -> web.StreamResponse:
    """``POST /executions/<txnId>/stop``: StopExecution; requests holding it get 409."""
    app = request.app
    settings = app[SETTINGS].current
    registry = app[REGISTRY]
    txn_id = request.match_info["txn_id"]
    bind_transaction(txn_id)
    if not is_txn_id(txn_id):
        return answers.error(404, f"no transaction {txn_id!r}")
    txn = registry.get(txn_id)
    try:
        if txn is not None:
            arn, ended = txn.execution_arn, txn.completion.status if txn.completion else None
        else:
            located = await app[EXECUTIONS].locate(txn_id)
            if located is None:
                return answers.error(404, f"no transaction {txn_id!r}")
            arn, status = located[1]["executionArn"], Status.parse(located[1]["status"])
            ended = status if status.final else None
        if ended is not None:
            return answers.error(
                409, f"execution already ended: {ended}", transactionId=txn_id, status=str(ended)
            )
        await app[EXECUTIONS].stop(arn)
    except AwsError as exc:
        if exc.code == "ExecutionDoesNotExist":
            return answers.error(404, f"no execution for transaction {txn_id!r}")
        return answers.aws_error(exc, settings.http.retry_after)
    registry.resolve(txn_id, Completion(Status.ABORTED, via="stop", execution_arn=arn))
    return web.json_response(
        {
            "transactionId": txn_id,
            "executionArn": arn,
            "status": str(Status.ABORTED),
            "message": "execution stopped",
        }
    )


def _refuse_if_busy(app: web.Application) -> web.Response | None:
    retry_after = {"Retry-After": str(app[SETTINGS].current.http.retry_after)}
    if not app[ADMISSION].accepting:
        return answers.error(503, "shutting down", retry_after)
    try:
        app[REGISTRY].check_capacity()
    except RegistryFullError as exc:
        return answers.error(503, f"too many held requests ({exc}); retry later", retry_after)
    return None


async def read_json_object(request: web.Request, limit: int) -> dict[str, Any] | web.Response:
    """The request's JSON object body, or the 400/413 answer saying what is wrong with it."""
    if request.content_length is not None and request.content_length > limit:
        return answers.error(413, f"body larger than {limit} bytes")
    chunks, size = [], 0
    # Read here rather than by aiohttp, whose own limit is fixed when the app is made.
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            return answers.error(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
    try:
        return bodies.parse_object(b"".join(chunks))
    except bodies.InvalidBodyError as exc:
        return answers.error(400, str(exc))


def _published_elsewhere(description: dict[str, Any], instance_id: str) -> bool:
    try:
        subtopic = json.loads(description.get("input") or "{}").get("subtopic")
    except (json.JSONDecodeError, AttributeError):
        return True
    return bool(subtopic != instance_id)


async def _answer(
    request: web.Request,
    txn: Transaction,
    waiter: asyncio.Future[Completion | None],
    wait: float,
    received_at: datetime,
    preference: str | None,
) -> web.Response:
    app = request.app
    settings = app[SETTINGS].current
    headers = {"Preference-Applied": preference} if preference else None
    # Since the request came: a look at Step Functions on its behalf counts as its last one.
    held_since = time.monotonic() - (utcnow() - received_at).total_seconds()
    if not waiter.done():
        # The waiter is awaited itself, not through asyncio.wait: its result wakes this task at
        # the loop's next turn, not one turn later. At the deadline the timeout cancels it.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await waiter
    if waiter.cancelled() and (safety_net := app.get(SAFETY_NET)) is not None:
        await safety_net.at_deadline(txn, held_since)
    completion = txn.completion if waiter.cancelled() else waiter.result()
    status = str(completion.status) if completion is not None else "RUNNING"
    app[METRICS].requests.labels(route=txn.route, status=status).inc()
    bind_transaction(txn.txn_id, txn.execution_arn)
    via = completion.via if completion is not None else "-"
    log.info("%s %s: %s via %s", request.method, request.path, status, via)
    if completion is None:
        return answers.running(
            txn, received_at=received_at, retry_after=settings.http.retry_after, headers=headers
        )
    sidecar = settings.routes[txn.route].input == "sidecar"
    process_data: Any = None
    process_data_error = None
    if sidecar:
        try:
            process_data = await app[EXECUTIONS].read_process_data(txn.txn_id)
        except (AwsError, ValueError) as exc:
            process_data_error = str(exc)
    return answers.final(
        txn,
        completion,
        received_at=received_at,
        process_data=process_data,
        process_data_error=process_data_error,
        sidecar=sidecar,
        headers=headers,
    )
