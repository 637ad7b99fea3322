"""The HTTP API's handlers: starting, holding and answering transactions, and the operating
endpoints.

``POST /<route>`` starts a transaction and holds the request until its completion arrives
or the hold time ends (202 + Location); with an ``Idempotency-Key`` the transaction is
keyed, so a retry anywhere attaches to it. ``GET /executions/<txnId or ARN>`` re-attaches
to any transaction (``GET /<route>`` with the ``Idempotency-Key``: to a keyed one);
``POST /executions/<txnId or ARN>/stop`` stops it; ``GET /executions`` lists the routes'
executions. Who may call each is declared where the routes are added
(:mod:`notifier.app.wiring`) and checked by a middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import time
from datetime import datetime
from typing import Any

from aiohttp import web

from notifier import answers, bodies, idempotency, openapi
from notifier.apikeys import HEADER as API_KEY_HEADER
from notifier.apikeys import KeyBudgetError
from notifier.app.preferences import Preferences, preferences
from notifier.app.routes import Handler
from notifier.app.state import (
    ADMISSION,
    API_KEY,
    API_KEY_NAME,
    API_KEYS,
    AWS_REACHABILITY,
    EXECUTIONS,
    INSTANCE_ID,
    LIVENESS,
    METRICS,
    MQTT_POOL,
    REGISTRY,
    SAFETY_NET,
    SETTINGS,
    SQS,
)
from notifier.dashboard.details import route_of
from notifier.executions import (
    LIST_LIMIT,
    LIST_STATUSES,
    MAX_LIST_LIMIT,
    AwsError,
    IdempotencyConflictError,
    InvalidPageTokenError,
    completion_from_description,
    started_by,
)
from notifier.ids import is_txn_id, keyed_txn_id, made_for, new_txn_id
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
    mqtt, sqs, liveness = app.get(MQTT_POOL), app.get(SQS), app.get(LIVENESS)
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
        "mqttConnections": len(mqtt.connections) if mqtt is not None else None,
        "mqttConnectionsMax": mqtt.max_connections if mqtt is not None else None,
        "mqttConnectionDetails": list(mqtt.describe()) if mqtt is not None else None,
        "mqttProblem": mqtt_problem,
        "mqttMissed": liveness.missed if liveness is not None else None,
        "sqsQueue": sqs.queue_url if sqs is not None else None,
        "sqsError": sqs.error if sqs is not None else None,
        "held": app[REGISTRY].held,
    }
    if not _may_see_details(request):
        # What a load balancer needs, and no more: no AWS error text, no queue URL.
        body = {name: body[name] for name in PUBLIC_READINESS}
    return web.json_response(body, status=200 if ready else 503)


PUBLIC_READINESS = ("ready", "state")


def _may_see_details(request: web.Request) -> bool:
    """With keys required, ``/readyz`` details only for a valid key within its rate."""
    if not request.app[SETTINGS].current.http.require_api_key:
        return True
    return request.app[API_KEYS].check(request.headers.get(API_KEY_HEADER)).status == 200


async def metrics_endpoint(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    return web.Response(body=metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE})


async def openapi_document(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS].current
    document = openapi.document(
        settings.routes, settings.http.require_api_key, settings.dashboard.enabled
    )
    return web.json_response(document)


def within_key_budget(handler: Handler) -> Handler:
    """``handler`` counting its request as held by its API key while it runs: 429 when the
    key holds its ``max_held`` already."""

    @functools.wraps(handler)
    async def counted(request: web.Request) -> web.StreamResponse:
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(request.app[API_KEYS].holding(request.get(API_KEY)))
            except KeyBudgetError as exc:
                retry_after = str(request.app[SETTINGS].current.http.retry_after)
                return answers.error(429, f"{exc}; retry later", {"Retry-After": retry_after})
            return await handler(request)

    return counted


@within_key_budget
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
    try:
        key = idempotency.idempotency_key(request.headers.getall(idempotency.HEADER, []))
    except idempotency.InvalidKeyError as exc:
        return answers.error(400, str(exc))
    if (refusal := _refuse_if_busy(app)) is not None:
        return refusal
    body = await read_json_object(request, settings.http.max_body_bytes)
    if isinstance(body, web.Response):
        return body
    prefer = preferences(
        request.headers.getall("Prefer", []), settings.http.default_wait, settings.http.max_wait
    )
    if (refusal := _refuse_if_busy(app)) is not None:  # again: the body took a while
        return refusal
    if key is not None:
        return await _start_keyed(request, route, key, body, prefer, received_at)
    owner = _owner(request)
    txn_id = new_txn_id(owner)
    txn = registry.track(
        Transaction(txn_id, route, executions.execution_arn(route, txn_id), owner=owner)
    )
    bind_transaction(txn_id, txn.execution_arn)
    # Held before StartExecution: a fast workflow may complete before it returns.
    async with registry.hold(txn_id) as waiter:
        try:
            txn.started_at = await executions.start(route, txn_id, body, owner)
        except AwsError as exc:
            registry.discard(txn_id)
            log.warning("POST /%s: %s", route, exc)
            return answers.aws_error(exc, settings.http.retry_after)
        return await _answer(request, txn, waiter, prefer, received_at)


async def _start_keyed(
    request: web.Request,
    route: str,
    key: str,
    body: dict[str, Any],
    prefer: Preferences,
    received_at: datetime,
) -> web.StreamResponse:
    """The same key and body: the same transaction, wherever it was started and whatever
    became of the instance that started it; the same key with another body: 422."""
    app = request.app
    settings = app[SETTINGS].current
    registry = app[REGISTRY]
    executions = app[EXECUTIONS]
    owner = _owner(request)
    txn_id = keyed_txn_id(route, key, owner)
    fingerprint = idempotency.fingerprint(body)
    bind_transaction(txn_id, executions.execution_arn(route, txn_id))
    txn = registry.get(txn_id)
    if txn is not None and txn.fingerprint is not None:  # this instance knows its body
        if txn.fingerprint != fingerprint:
            return _key_taken(route, txn_id)
        async with registry.hold(txn_id) as waiter:
            return await _answer(request, txn, waiter, prefer, received_at)
    # Not known to be started yet: each request with the key makes the calls itself (they
    # are idempotent), so that none depends on another one's succeeding.
    txn = registry.track(
        Transaction(txn_id, route, executions.execution_arn(route, txn_id), owner=owner)
    )
    async with registry.hold(txn_id) as waiter:
        try:
            found = await executions.start_keyed(route, txn_id, body, fingerprint, owner)
        except (IdempotencyConflictError, AwsError) as exc:
            if txn.waiters == {waiter} and _nothing_known(txn):
                registry.discard(txn_id)
            if isinstance(exc, IdempotencyConflictError):
                return _key_taken(route, txn_id)
            log.warning("POST /%s: %s", route, exc)
            return answers.aws_error(exc, settings.http.retry_after)
        txn.fingerprint = fingerprint
        if found.started_at is not None:  # running with this instance's input
            txn.started_at, txn.poll = found.started_at, False
        elif found.description is not None:
            log.info("POST /%s: attached to the execution already started for its key", route)
            _attach(app, txn, found.description)
        return await _answer(request, txn, waiter, prefer, received_at)


def _nothing_known(txn: Transaction) -> bool:
    """Whether nothing says ``txn`` has an execution: neither a start, nor a look at Step
    Functions, nor a completion."""
    return (
        txn.fingerprint is None
        and txn.started_at is None
        and txn.asked_at is None
        and txn.completion is None
    )


def _key_taken(route: str, txn_id: str) -> web.Response:
    log.info("POST /%s: the Idempotency-Key is taken by a request with another body", route)
    return answers.error(
        422,
        f"this {idempotency.HEADER} was used with a different request body",
        transactionId=txn_id,
    )


def _owner(request: web.Request) -> str | None:
    """The API key a request acts for, when keys are required: it owns the transactions the
    request starts, and idempotency keys are its own."""
    if not request.app[SETTINGS].current.http.require_api_key:
        return None
    return request.get(API_KEY_NAME)


def _sees_every_transaction(request: web.Request) -> bool:
    """With keys off, or with an ``admin`` key; any other key sees its own only."""
    key = request.get(API_KEY)
    return _owner(request) is None or (key is not None and key.admin)


def _may_name(request: web.Request, txn_id: str) -> bool:
    """Whether the request may ask about ``txn_id`` at all: an id made for another key is
    answered 404 before anything is looked up, as if it did not exist."""
    owner = _owner(request)
    return _sees_every_transaction(request) or (owner is not None and made_for(txn_id, owner))


def _may_see(request: web.Request, owner: str | None) -> bool:
    """Whether the request may see a transaction started by the key named ``owner``."""
    return _sees_every_transaction(request) or (owner is not None and owner == _owner(request))


@within_key_budget
async def reattach(request: web.Request) -> web.StreamResponse:
    """``GET /executions/<txnId or execution ARN>?wait=N``: the final answer, or 202 after
    N seconds."""
    found = _transaction_named(request, request.match_info["txn_id"])
    if isinstance(found, web.Response):
        return found
    return await _reattach(request, *found)


@within_key_budget
async def reattach_by_key(request: web.Request) -> web.StreamResponse:
    """``GET /<route>`` with the ``Idempotency-Key`` of a ``POST``: re-attach to it."""
    route = request.match_info["route"]
    if route not in request.app[SETTINGS].current.routes:
        return answers.error(404, f"no route {route!r}")
    try:
        key = idempotency.idempotency_key(request.headers.getall(idempotency.HEADER, []))
    except idempotency.InvalidKeyError as exc:
        return answers.error(400, str(exc))
    if key is None:
        return answers.error(400, f"the {idempotency.HEADER} of the transaction is required")
    return await _reattach(request, keyed_txn_id(route, key, _owner(request)), route)


async def _reattach(request: web.Request, txn_id: str, route: str | None) -> web.StreamResponse:
    received_at = utcnow()
    app = request.app
    settings = app[SETTINGS].current
    registry = app[REGISTRY]
    bind_transaction(txn_id)
    wait = settings.http.default_wait
    if "wait" in request.query:
        try:
            wait = float(request.query["wait"])
        except ValueError:
            wait = math.nan
        if not math.isfinite(wait) or wait < 0:
            return answers.error(400, "wait must be a non-negative number of seconds")
        wait = min(wait, settings.http.max_wait)
    if (refusal := _refuse_if_busy(app, reattach=True)) is not None:
        return refusal
    if not _may_name(request, txn_id):
        return _no_transaction(txn_id)
    known = registry.get(txn_id)
    if known is None:
        try:
            located = await app[EXECUTIONS].locate(txn_id, route)
        except AwsError as exc:
            return answers.aws_error(exc, settings.http.retry_after)
        if located is None:
            return _no_transaction(txn_id)
        found_route, description = located
        owner = started_by(description)
        found = Transaction(txn_id, found_route, description["executionArn"], owner=owner)
        if not _may_see(request, owner):
            return _no_transaction(txn_id)
        _attach(app, registry.track(found), description)
    elif not _may_see(request, known.owner):
        return _no_transaction(txn_id)
    elif (safety_net := app.get(SAFETY_NET)) is not None:
        await safety_net.on_reattach(known)
    txn = registry.get(txn_id)
    if txn is None:  # evicted while DescribeExecution ran; only with a tiny recent_completions
        return answers.error(503, "too busy; retry", {"Retry-After": "1"})
    if (refusal := _refuse_if_busy(app, reattach=True)) is not None:  # again: AWS took a while
        return refusal
    async with registry.hold(txn_id, reattach=True) as waiter:
        prefer = Preferences(wait, respond_async=False, applied=None)
        return await _answer(request, txn, waiter, prefer, received_at)


def _attach(app: web.Application, txn: Transaction, description: dict[str, Any]) -> None:
    """Take over what DescribeExecution told of a transaction this instance did not start
    (or not with its own input): poll it if its completion is published elsewhere, and
    resolve it if it ended."""
    if txn.started_at is None:
        txn.poll = _published_elsewhere(app, txn, description)
    txn.asked_at = time.monotonic()  # finding it described it
    if Status.parse(description["status"]).final:
        app[REGISTRY].resolve(txn.txn_id, completion_from_description(description))


def _transaction_named(request: web.Request, name: str) -> tuple[str, str | None] | web.Response:
    """The transaction id and, for an execution ARN, the route, that a path names; or the
    404 for what names no transaction of this daemon's routes."""
    if is_txn_id(name):
        bind_transaction(name)
        return name, None
    if name.startswith("arn:"):
        route = route_of(request.app[SETTINGS].current.routes, name)
        txn_id = name.rpartition(":")[2]
        if route is not None and is_txn_id(txn_id):
            bind_transaction(txn_id, name)
            return txn_id, route
        return answers.error(404, f"{name!r} is no transaction of this daemon's routes")
    return answers.error(404, f"no transaction {name!r}")


async def stop(request: web.Request) -> web.StreamResponse:
    """``POST /executions/<txnId or execution ARN>/stop``: StopExecution; requests holding
    it get 409."""
    app = request.app
    settings = app[SETTINGS].current
    registry = app[REGISTRY]
    found = _transaction_named(request, request.match_info["txn_id"])
    if isinstance(found, web.Response):
        return found
    txn_id, route = found
    if not _may_name(request, txn_id):
        return _no_transaction(txn_id)
    txn = registry.get(txn_id)
    try:
        if txn is not None:
            if not _may_see(request, txn.owner):
                return _no_transaction(txn_id)
            arn, ended = txn.execution_arn, txn.completion.status if txn.completion else None
        else:
            located = await app[EXECUTIONS].locate(txn_id, route)
            if located is None:
                return _no_transaction(txn_id)
            if not _may_see(request, started_by(located[1])):
                return _no_transaction(txn_id)
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


async def list_executions(request: web.Request) -> web.Response:
    """``GET /executions?route=&status=&limit=&nextToken=``: the routes' executions, newest
    first within each route, a page at a time (ListExecutions)."""
    app = request.app
    settings = app[SETTINGS].current
    query = request.query
    route = query.get("route")
    if route is not None and route not in settings.routes:
        return answers.error(404, f"no route {route!r}")
    status = query.get("status")
    if status is not None and status not in LIST_STATUSES:
        return answers.error(400, f"status must be one of {', '.join(LIST_STATUSES)}")
    try:
        limit = int(query.get("limit", LIST_LIMIT))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIST_LIMIT:
        return answers.error(400, f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}")
    routes = [route] if route is not None else sorted(settings.routes)
    try:
        page = await app[EXECUTIONS].listing(routes, status, limit, query.get("nextToken"))
    except InvalidPageTokenError as exc:
        return answers.error(400, str(exc))
    except AwsError as exc:
        return answers.aws_error(exc, settings.http.retry_after)
    executions = [
        {
            "executionArn": item["executionArn"],
            "name": item["name"],
            "transactionId": item["name"] if is_txn_id(item["name"]) else None,
            "route": item["route"],
            "status": str(Status.parse(item.get("status"))),
            "startDate": _timestamp(item.get("startDate")),
            "stopDate": _timestamp(item.get("stopDate")),
        }
        for item in page.items
        if _sees_every_transaction(request) or _may_name(request, item["name"])
    ]
    return web.json_response({"executions": executions, "nextToken": page.next_token})


def _no_transaction(txn_id: str) -> web.Response:
    """What a key is told of a transaction that does not exist, or is another key's."""
    return answers.error(404, f"no transaction {txn_id!r}")


def _timestamp(value: Any) -> str | None:
    return answers.timestamp(value) if isinstance(value, datetime) else None


def _refuse_if_busy(app: web.Application, *, reattach: bool = False) -> web.Response | None:
    retry_after = {"Retry-After": str(app[SETTINGS].current.http.retry_after)}
    if not app[ADMISSION].accepting:
        return answers.error(503, "shutting down", retry_after)
    try:
        app[REGISTRY].check_capacity(reattach=reattach)
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


def _published_elsewhere(
    app: web.Application, txn: Transaction, description: dict[str, Any]
) -> bool:
    """Whether the execution publishes its completion to a subtopic no connection of this
    instance receives (then it is polled)."""
    try:
        subtopic = json.loads(description.get("input") or "{}").get("subtopic")
    except (json.JSONDecodeError, AttributeError):
        return True
    pool = app.get(MQTT_POOL)
    if pool is None:
        return bool(subtopic != app[INSTANCE_ID])
    return not isinstance(subtopic, str) or not pool.adopt(txn.txn_id, subtopic)


async def _answer(
    request: web.Request,
    txn: Transaction,
    waiter: asyncio.Future[Completion | None],
    prefer: Preferences,
    received_at: datetime,
) -> web.Response:
    app = request.app
    settings = app[SETTINGS].current
    headers = {"Preference-Applied": prefer.applied} if prefer.applied else None
    # Since the request came: a look at Step Functions on its behalf counts as its last one.
    held_since = time.monotonic() - (utcnow() - received_at).total_seconds()
    if not waiter.done():
        # The waiter is awaited itself, not through asyncio.wait: its result wakes this task at
        # the loop's next turn, not one turn later. At the deadline the timeout cancels it.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(prefer.wait):
                await waiter
    # A client that asked for an answer at once is not kept waiting for a look.
    at_once = prefer.respond_async and prefer.wait == 0
    if waiter.cancelled() and not at_once and (safety_net := app.get(SAFETY_NET)) is not None:
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
