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
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from notifier.app import owners
from notifier.app.preferences import Preferences, preferences
from notifier.app.routing import url_of
from notifier.app.state import (
    ADMISSION,
    API_KEY_NAME,
    EXECUTIONS,
    INSTANCE_ID,
    METRICS,
    MQTT_POOL,
    REGISTRY,
    SAFETY_NET,
    SETTINGS,
    SYNC_RUNS,
    TRACING,
)
from notifier.aws.errors import AwsError
from notifier.config import RouteSettings, route_limits
from notifier.logs import bind_transaction
from notifier.requests import answers, bodies, idempotency
from notifier.requests.executions import (
    IdempotencyConflictError,
    InputTooLargeError,
    completion_from_description,
    started_by,
)
from notifier.requests.history import UnknownExecutionError, history_page
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
    received = time.monotonic()
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
    route_settings = settings.routes[route]
    if (refusal := _refuse_role(request, route_settings)) is not None:
        return refusal
    if (refusal := _refuse_if_busy(app)) is not None:
        return refusal
    default_wait, max_wait, max_body_bytes = route_limits(route_settings, settings.http)
    body = await bodies.read_start_body(request, route_settings, max_body_bytes)
    if isinstance(body, web.Response):
        return body
    prefer = preferences(request.headers.getall("Prefer", []), default_wait, max_wait)
    if (refusal := _refuse_if_busy(app)) is not None:  # again: the body took a while
        return refusal
    try:
        executions.check_input_size(route, body, owners.owner(request))
    except InputTooLargeError as exc:
        return answers.error(413, str(exc))
    if route_settings.workflow == "express":
        return await _start_express(request, route, key, body, prefer, received_at)
    deadline = received + prefer.wait
    if key is not None:
        return await _start_keyed(request, route, key, body, prefer, received_at, deadline)
    owner = owners.owner(request)
    txn_id = new_txn_id(owner)
    arn = executions.execution_arn(route, txn_id)
    txn = registry.track(Transaction(txn_id, route, arn, owner=owner))
    bind_transaction(txn_id, txn.execution_arn)
    # Held before StartExecution: a fast workflow may complete before it returns.
    async with registry.hold(txn_id, deadline=deadline) as waiter:
        try:
            txn.started_at = await executions.start(route, txn_id, body, owner, deadline)
        except InputTooLargeError as exc:  # within a subtopic's length of the limit
            registry.discard(txn_id)
            return answers.error(413, str(exc))
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
    deadline: float,
) -> web.StreamResponse:
    """The same key and body: the same transaction, wherever it was started and whatever
    became of the instance that started it; the same key with another body: 422. The
    request is answered by ``deadline`` (monotonic)."""
    app = request.app
    registry = app[REGISTRY]
    executions = app[EXECUTIONS]
    owner = owners.owner(request)
    txn_id = keyed_txn_id(route, key, owner)
    fingerprint = idempotency.fingerprint(body)
    bind_transaction(txn_id, executions.execution_arn(route, txn_id))
    txn = registry.get(txn_id)
    if txn is not None and txn.fingerprint is not None:  # this instance knows its body
        if txn.fingerprint != fingerprint:
            return _key_taken(route, txn_id)
        async with registry.hold(txn_id, deadline=deadline) as waiter:
            return await _answer(request, txn, waiter, prefer, received_at)
    # Not known to be started yet: each request with the key makes the calls itself (they
    # are idempotent), so that none depends on another one's succeeding.
    arn = executions.execution_arn(route, txn_id)
    txn = registry.track(Transaction(txn_id, route, arn, owner=owner))
    async with registry.hold(txn_id, deadline=deadline) as waiter:
        try:
            found = await executions.start_keyed(route, txn_id, body, fingerprint, owner, deadline)
        except (IdempotencyConflictError, InputTooLargeError, AwsError) as exc:
            return _start_failed(request, txn, waiter, exc)
        txn.fingerprint = fingerprint
        if found.started_at is not None:  # running with this instance's input
            txn.started_at, txn.poll = found.started_at, False
        elif found.description is not None:
            log.info("POST /%s: attached to the execution already started for its key", route)
            _attach(app, txn, found.description)
        return await _answer(request, txn, waiter, prefer, received_at)


async def _start_express(
    request: web.Request,
    route: str,
    key: str | None,
    body: dict[str, Any],
    prefer: Preferences,
    received_at: datetime,
) -> web.StreamResponse:
    """An Express workflow, run with StartSyncExecution: its answer, or the workflow's own
    MQTT message, completes the request. Express keeps no execution to find by name, so a
    key is honoured by the instance that knows its transaction; elsewhere, the same key and
    body run the workflow again (another body is 422, as for any route)."""
    app = request.app
    settings = app[SETTINGS].current
    registry = app[REGISTRY]
    executions = app[EXECUTIONS]
    fingerprint = None
    owner = owners.owner(request)
    if key is None:
        txn_id = new_txn_id(owner)
    else:
        txn_id = keyed_txn_id(route, key, owner)
        fingerprint = idempotency.fingerprint(body)
        known = registry.get(txn_id)
        if known is not None and known.fingerprint is not None:
            if known.fingerprint != fingerprint:
                return _key_taken(route, txn_id)
            async with registry.hold(txn_id) as waiter:
                return await _answer(request, known, waiter, prefer, received_at)
    arn = executions.execution_arn(route, txn_id)
    txn = registry.track(Transaction(txn_id, route, arn, express=True, owner=owner))
    bind_transaction(txn_id, arn)
    async with registry.hold(txn_id) as waiter:
        try:
            await executions.store_for_sync(route, txn_id, body, fingerprint)
        except (IdempotencyConflictError, AwsError) as exc:
            return _start_failed(request, txn, waiter, exc)
        txn.fingerprint, txn.started_at = fingerprint, utcnow()
        run = app[SYNC_RUNS].run(txn, executions.run_sync(route, txn_id, body, owner))
        # A call that fails does so at once; one that ends in time has resolved the waiter.
        either: set[asyncio.Future[Any]] = {run, waiter}
        await asyncio.wait(either, timeout=prefer.wait, return_when=asyncio.FIRST_COMPLETED)
        if run.done() and (failure := run.result()) is not None and txn.completion is None:
            if txn.waiters == {waiter}:
                registry.discard(txn_id)
            return answers.aws_error(failure, settings.http.retry_after)
        held = (utcnow() - received_at).total_seconds()
        remaining = dataclasses.replace(prefer, wait=max(0.0, prefer.wait - held))
        return await _answer(request, txn, waiter, remaining, received_at)


def _start_failed(
    request: web.Request,
    txn: Transaction,
    waiter: asyncio.Future[Completion | None],
    exc: IdempotencyConflictError | InputTooLargeError | AwsError,
) -> web.Response:
    """A keyed start that found the key taken (422) or failed (the AWS error); the
    transaction is forgotten unless something says it has an execution or another request
    waits for it."""
    if txn.waiters == {waiter} and _nothing_known(txn):
        request.app[REGISTRY].discard(txn.txn_id)
    if isinstance(exc, IdempotencyConflictError):
        return _key_taken(txn.route, txn.txn_id)
    if isinstance(exc, InputTooLargeError):  # within a subtopic's length of the limit
        return answers.error(413, str(exc))
    log.warning("POST /%s: %s", txn.route, exc)
    return answers.aws_error(exc, request.app[SETTINGS].current.http.retry_after)


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
        return _how_to_start(request, route)
    return await _reattach(request, keyed_txn_id(route, key, owners.owner(request)), route)


def _how_to_start(request: web.Request, route: str) -> web.Response:
    """A ``GET /<route>`` without a key: 405, naming the ``POST`` that starts the route."""
    default_input = request.app[SETTINGS].current.routes[route].default_input
    url = request.url.with_query(None)
    command = f"curl -X POST {url}"
    if default_input is None:
        example = json.dumps({"example": "value"})
        command += f" -H 'content-type: application/json' -d '{example}'"
    return answers.error(
        405,
        f"POST starts the route {route!r} (GET with an {idempotency.HEADER} re-attaches to "
        f"what a POST with it started): {command}",
        {"Allow": "POST"},
        start={"method": "POST", "path": f"/{route}", "defaultInput": default_input},
    )


def _refuse_role(request: web.Request, route: RouteSettings) -> web.Response | None:
    """403 when the route names ``start_roles`` and the request's API key has none of them."""
    settings = request.app[SETTINGS].current
    if route.start_roles is None or not settings.http.require_api_key:
        return None
    key = settings.api_keys.get(request.get(API_KEY_NAME) or "")
    roles = set(key.roles) if key is not None else set()
    if roles.isdisjoint(route.start_roles):
        needed = ", ".join(route.start_roles)
        return answers.error(403, f"starting this route needs an API key with a role of: {needed}")
    return None


async def _reattach(request: web.Request, txn_id: str, route: str | None) -> web.StreamResponse:
    received_at = utcnow()
    received = time.monotonic()
    app = request.app
    settings = app[SETTINGS].current
    registry = app[REGISTRY]
    bind_transaction(txn_id)
    asked: float | None = None
    if "wait" in request.query:
        try:
            asked = float(request.query["wait"])
        except ValueError:
            asked = math.nan
        if not math.isfinite(asked) or asked < 0:
            return answers.error(400, "wait must be a non-negative number of seconds")
    if (refusal := _refuse_if_busy(app, reattach=True)) is not None:
        return refusal
    if not owners.may_name(request, txn_id):
        return owners.no_transaction(txn_id)
    known = registry.get(txn_id)
    if known is None:
        try:
            located = await app[EXECUTIONS].locate(txn_id, route)
        except AwsError as exc:
            return answers.aws_error(exc, settings.http.retry_after)
        if located is None or not owners.may_see_described(request, located[1]):
            return owners.no_transaction(txn_id)
        found_route, description = located
        owner = started_by(description)
        found = Transaction(txn_id, found_route, description["executionArn"], owner=owner)
        _attach(app, registry.track(found), description)
    elif not owners.may_see(request, known.owner):
        return owners.no_transaction(txn_id)
    else:
        await _follow_a_redrive(app, known)
        if (safety_net := app.get(SAFETY_NET)) is not None:
            await safety_net.on_reattach(known, received + _reattach_wait(app, known, asked))
    txn = registry.get(txn_id)
    if txn is None:  # evicted while DescribeExecution ran; only with a tiny recent_completions
        return answers.error(503, "too busy; retry", {"Retry-After": "1"})
    if (refusal := _refuse_if_busy(app, reattach=True)) is not None:  # again: AWS took a while
        return refusal
    wait = _reattach_wait(app, txn, asked)
    async with registry.hold(txn_id, reattach=True, deadline=received + wait) as waiter:
        prefer = Preferences(wait, respond_async=False, applied=None)
        return await _answer(request, txn, waiter, prefer, received_at)


def _reattach_wait(app: web.Application, txn: Transaction, asked: float | None) -> float:
    """Seconds a re-attach to ``txn`` holds: as ``?wait=`` asked, within its route's limit."""
    settings = app[SETTINGS].current
    default_wait, max_wait, _ = route_limits(
        settings.routes.get(txn.route, RouteSettings()), settings.http
    )
    return min(asked, max_wait) if asked is not None else default_wait


def _attach(app: web.Application, txn: Transaction, description: dict[str, Any]) -> None:
    """Take over what DescribeExecution told of a transaction this instance did not start
    (or not with its own input): poll it if its completion is published elsewhere, and
    resolve it if it ended."""
    if txn.started_at is None:
        txn.poll = _published_elsewhere(app, txn, description)
    txn.asked_at = time.monotonic()  # finding it described it
    txn.pending_redrive = description["status"] == Status.PENDING_REDRIVE
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


@dataclass(frozen=True)
class _Named:
    """The execution a path names, for an operation Standard executions alone have."""

    txn_id: str
    route: str
    arn: str
    txn: Transaction | None
    """This instance's record of it; None when it had none."""
    description: dict[str, Any] | None
    """DescribeExecution, when this instance had no record to go by."""


async def _standard_execution(request: web.Request, refusal: str) -> _Named | web.Response:
    """The execution a path names (this instance's record, else found with
    DescribeExecution); or the 404, the AWS error, or the 409 ``refusal`` for an Express one
    (Step Functions offers Express executions no stop, redrive or history)."""
    app = request.app
    found = _transaction_named(request, request.match_info["txnId"])
    if isinstance(found, web.Response):
        return found
    txn_id, route = found
    if not owners.may_name(request, txn_id):
        return owners.no_transaction(txn_id)
    txn = app[REGISTRY].get(txn_id)
    if txn is not None and not owners.may_see(request, txn.owner):
        return owners.no_transaction(txn_id)
    if txn is not None:
        if txn.express:
            return answers.error(409, refusal)
        return _Named(txn_id, txn.route, txn.execution_arn, txn, None)
    try:
        located = await app[EXECUTIONS].locate(txn_id, route)
    except AwsError as exc:
        return answers.aws_error(exc, app[SETTINGS].current.http.retry_after)
    if located is None or not owners.may_see_described(request, located[1]):
        return owners.no_transaction(txn_id)
    route, description = located
    return _Named(txn_id, route, description["executionArn"], None, description)


async def stop(request: web.Request) -> web.StreamResponse:
    """``POST /executions/<txnId or execution ARN>/stop``: StopExecution; requests holding
    it get 409."""
    app = request.app
    settings = app[SETTINGS].current
    named = await _standard_execution(request, "an Express workflow cannot be stopped")
    if isinstance(named, web.Response):
        return named
    txn_id, arn = named.txn_id, named.arn
    if named.txn is not None:
        completion = named.txn.completion
        ended = completion.status if completion is not None else None
    else:
        assert named.description is not None
        status = Status.parse(named.description["status"])
        ended = status if status.final else None
    if ended is not None:
        return answers.error(
            409, f"execution already ended: {ended}", transactionId=txn_id, status=str(ended)
        )
    try:
        await app[EXECUTIONS].stop(arn)
    except AwsError as exc:
        if exc.code == "ExecutionDoesNotExist":
            return answers.error(404, f"no execution for transaction {txn_id!r}")
        return answers.aws_error(exc, settings.http.retry_after)
    app[REGISTRY].resolve(txn_id, Completion(Status.ABORTED, via="stop", execution_arn=arn))
    return web.json_response(
        {
            "transactionId": txn_id,
            "executionArn": arn,
            "status": str(Status.ABORTED),
            "message": "execution stopped",
        }
    )


HISTORY_PAGE = 100
"""History events a page has unless asked for fewer or more (up to 1,000)."""


async def execution_history(request: web.Request) -> web.Response:
    """``GET /executions/<txnId or execution ARN>/history?limit=&nextToken=``: the
    execution's history (GetExecutionHistory), a page at a time, task tokens removed."""
    app = request.app
    settings = app[SETTINGS].current
    try:
        limit = int(request.query.get("limit", HISTORY_PAGE))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIST_LIMIT:
        return answers.error(400, f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}")
    named = await _standard_execution(request, "an Express workflow keeps no history to read")
    if isinstance(named, web.Response):
        return named
    token = request.query.get("nextToken")
    try:
        page = await history_page(app[EXECUTIONS], named.arn, limit, token)
    except InvalidPageTokenError as exc:
        return answers.error(400, str(exc))
    except UnknownExecutionError:
        return answers.error(404, f"no execution for transaction {named.txn_id!r}")
    except AwsError as exc:
        return answers.aws_error(exc, settings.http.retry_after)
    return web.json_response({"transactionId": named.txn_id, **page})


async def redrive(request: web.Request) -> web.StreamResponse:
    """``POST /executions/<txnId or execution ARN>/redrive``: RedriveExecution of a failed,
    timed-out or aborted execution; 202, and whoever re-attaches waits for its new end."""
    app = request.app
    settings = app[SETTINGS].current
    registry = app[REGISTRY]
    named = await _standard_execution(request, "an Express workflow cannot be redriven")
    if isinstance(named, web.Response):
        return named
    txn_id, arn = named.txn_id, named.arn
    try:
        await app[EXECUTIONS].redrive(arn)
    except AwsError as exc:
        if exc.code == "ExecutionNotRedrivable":
            return answers.error(409, f"the execution cannot be redriven: {exc.message}")
        if exc.code == "ExecutionDoesNotExist":
            return answers.error(404, f"no execution for transaction {txn_id!r}")
        return answers.aws_error(exc, settings.http.retry_after)
    log.info("redriven", extra={"txnId": txn_id, "executionArn": arn})
    txn = named.txn
    if txn is None:
        assert named.description is not None  # found by describing it
        owner = started_by(named.description)
        txn = registry.track(Transaction(txn_id, named.route, arn, owner=owner))
        txn.poll = _published_elsewhere(app, txn, named.description)
        txn.completion = completion_from_description(named.description)
    registry.reopen(txn_id)
    return answers.running(
        txn,
        location=url_of(request, REATTACH, txnId=txn_id),
        received_at=utcnow(),
        retry_after=settings.http.retry_after,
        message="redriven",
    )


async def _follow_a_redrive(app: web.Application, txn: Transaction) -> None:
    """A re-attach to a transaction remembered as failed, timed out or aborted: if Step
    Functions says it runs again (redriven, maybe by another instance), wait for its new
    end rather than answer the old one. One DescribeExecution, within the shared budget;
    without an answer, the remembered end is given."""
    ended = txn.completion
    if ended is None or ended.status is Status.SUCCEEDED or txn.express:
        return
    try:
        description = await app[EXECUTIONS].describe_shared(txn.execution_arn)
    except AwsError:
        return
    status = Status.parse(description.get("status"))
    txn.pending_redrive = status is Status.PENDING_REDRIVE
    stopped = description.get("stopDate")
    if not status.final or (
        ended.stop_date is not None and stopped is not None and stopped > ended.stop_date
    ):
        app[REGISTRY].reopen(txn.txn_id)
        if status.final:
            app[REGISTRY].resolve(txn.txn_id, completion_from_description(description))


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
    if route is not None and not settings.routes[route].describable:
        return answers.error(400, f"{route!r} runs an Express workflow, which is not listed")
    listed = [name for name, r in settings.routes.items() if r.describable]
    routes = [route] if route is not None else sorted(listed)
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
        if owners.may_name(request, item["name"])
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
    with app[TRACING].span("hold", {"notifier.txn_id": txn.txn_id}) as span:
        if not waiter.done():
            # The waiter is awaited itself, not through asyncio.wait: its result wakes this
            # task at the loop's next turn, not one turn later. At the deadline the timeout
            # cancels it.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(prefer.wait):
                    await waiter
        # A client that asked for an answer at once is not kept waiting for a look.
        at_once = prefer.respond_async and prefer.wait == 0
        if waiter.cancelled() and not at_once and (safety := app.get(SAFETY_NET)) is not None:
            await safety.at_deadline(txn, held_since)
        completion = txn.completion if waiter.cancelled() else waiter.result()
        status = str(completion.status) if completion is not None else "RUNNING"
        if span is not None:
            via = completion.via if completion is not None else "none"
            span.set_attributes({"notifier.status": status, "notifier.completed_via": via})
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
