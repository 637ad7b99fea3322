"""The HTTP API's transaction handlers: starting, holding, answering, stopping and listing
(the operating endpoints are in :mod:`notifier.app.operating`).

``POST /<route>`` starts a transaction and holds the request until its completion arrives
or the hold time ends (202 + Location); with an ``Idempotency-Key`` the transaction is
keyed, so a retry anywhere attaches to it. ``GET /executions/<txnId or ARN>`` re-attaches
to any transaction (``GET /<route>`` with the ``Idempotency-Key``: to a keyed one);
``POST /executions/<txnId or ARN>/stop`` stops it; ``GET /executions`` lists the routes'
executions. Who may call each is declared in the route table (:mod:`notifier.routes`) and
checked by a middleware.
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

from notifier.app.preferences import Preferences, preferences
from notifier.app.routing import url_of
from notifier.app.state import (
    ADMISSION,
    API_KEY_NAME,
    EXECUTIONS,
    INSTANCE_ID,
    METRICS,
    REGISTRY,
    SAFETY_NET,
    SETTINGS,
)
from notifier.aws.errors import AwsError
from notifier.logs import bind_transaction
from notifier.requests import answers, bodies, idempotency
from notifier.requests.executions import IdempotencyConflictError, completion_from_description
from notifier.requests.ids import is_txn_id, keyed_txn_id, new_txn_id, route_of
from notifier.requests.listing import (
    LIST_LIMIT,
    LIST_STATUSES,
    MAX_LIST_LIMIT,
    InvalidPageTokenError,
)
from notifier.requests.waiters import (
    Completion,
    RegistryFullError,
    Status,
    Transaction,
    utcnow,
)

log = logging.getLogger(__name__)

REATTACH = "reattach"
"""The operation id of ``GET /executions/{txnId}``, where a 202's ``Location`` points."""


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
    body = await bodies.read_json_object(request, settings.http.max_body_bytes)
    if isinstance(body, web.Response):
        return body
    prefer = preferences(
        request.headers.getall("Prefer", []), settings.http.default_wait, settings.http.max_wait
    )
    if (refusal := _refuse_if_busy(app)) is not None:  # again: the body took a while
        return refusal
    if key is not None:
        return await _start_keyed(request, route, key, body, prefer, received_at)
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
    txn_id = keyed_txn_id(route, key, _principal(request))
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
    txn = registry.track(Transaction(txn_id, route, executions.execution_arn(route, txn_id)))
    async with registry.hold(txn_id) as waiter:
        try:
            found = await executions.start_keyed(route, txn_id, body, fingerprint)
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


def _principal(request: web.Request) -> str | None:
    """Whose idempotency keys a request's are: its API key's, when keys are required."""
    if not request.app[SETTINGS].current.http.require_api_key:
        return None
    return request.get(API_KEY_NAME)


async def reattach(request: web.Request) -> web.StreamResponse:
    """``GET /executions/<txnId or execution ARN>?wait=N``: the final answer, or 202 after
    N seconds."""
    found = _transaction_named(request, request.match_info["txnId"])
    if isinstance(found, web.Response):
        return found
    return await _reattach(request, *found)


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
    return await _reattach(request, keyed_txn_id(route, key, _principal(request)), route)


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
    known = registry.get(txn_id)
    if known is None:
        try:
            located = await app[EXECUTIONS].locate(txn_id, route)
        except AwsError as exc:
            return answers.aws_error(exc, settings.http.retry_after)
        if located is None:
            return answers.error(404, f"no transaction {txn_id!r}")
        found_route, description = located
        located_txn = registry.track(Transaction(txn_id, found_route, description["executionArn"]))
        _attach(app, located_txn, description)
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
        txn.poll = _published_elsewhere(description, app[INSTANCE_ID])
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
    found = _transaction_named(request, request.match_info["txnId"])
    if isinstance(found, web.Response):
        return found
    txn_id, route = found
    txn = registry.get(txn_id)
    try:
        if txn is not None:
            arn, ended = txn.execution_arn, txn.completion.status if txn.completion else None
        else:
            located = await app[EXECUTIONS].locate(txn_id, route)
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
    ]
    return web.json_response({"executions": executions, "nextToken": page.next_token})


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
            txn,
            location=url_of(request, REATTACH, txnId=txn.txn_id),
            received_at=received_at,
            retry_after=settings.http.retry_after,
            headers=headers,
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
