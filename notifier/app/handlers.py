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
import dataclasses
import json
import logging
import math
import time
from datetime import datetime
from typing import Any

from aiohttp import web

from notifier.app import owners
from notifier.app.holding import answer
from notifier.app.preferences import Preferences, preferences
from notifier.app.state import (
    ADMISSION,
    API_KEY_NAME,
    EXECUTIONS,
    INSTANCE_ID,
    MQTT_POOL,
    REGISTRY,
    SAFETY_NET,
    SETTINGS,
    SYNC_RUNS,
)
from notifier.aws.errors import AwsError
from notifier.config import RouteSettings, route_limits
from notifier.logs import bind_transaction
from notifier.requests import answers, bodies, idempotency
from notifier.requests.descriptions import completion_from_description
from notifier.requests.execution_input import InputTooLargeError, started_by
from notifier.requests.idempotency import IdempotencyConflictError
from notifier.requests.ids import is_txn_id, keyed_txn_id, new_txn_id, route_of
from notifier.requests.waiters import (
    Completion,
    RegistryFullError,
    Status,
    Transaction,
    utcnow,
)

log = logging.getLogger(__name__)


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
    if (refusal := refuse_if_busy(app)) is not None:
        return refusal
    default_wait, max_wait, max_body_bytes = route_limits(route_settings, settings.http)
    body = await bodies.read_start_body(request, route_settings, max_body_bytes)
    if isinstance(body, web.Response):
        return body
    prefer = preferences(request.headers.getall("Prefer", []), default_wait, max_wait)
    if (refusal := refuse_if_busy(app)) is not None:  # again: the body took a while
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
        return await answer(request, txn, waiter, prefer, received_at)


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
            return await answer(request, txn, waiter, prefer, received_at)
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
        return await answer(request, txn, waiter, prefer, received_at)


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
                return await answer(request, known, waiter, prefer, received_at)
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
        return await answer(request, txn, waiter, remaining, received_at)


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
    found = transaction_named(request, request.match_info["txnId"])
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
    if (refusal := refuse_if_busy(app, reattach=True)) is not None:
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
    if (refusal := refuse_if_busy(app, reattach=True)) is not None:  # again: AWS took a while
        return refusal
    wait = _reattach_wait(app, txn, asked)
    async with registry.hold(txn_id, reattach=True, deadline=received + wait) as waiter:
        prefer = Preferences(wait, respond_async=False, applied=None)
        return await answer(request, txn, waiter, prefer, received_at)


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
        txn.poll = published_elsewhere(app, txn, description)
    txn.asked_at = time.monotonic()  # finding it described it
    txn.pending_redrive = description["status"] == Status.PENDING_REDRIVE
    if Status.parse(description["status"]).final:
        app[REGISTRY].resolve(txn.txn_id, completion_from_description(description))


def transaction_named(request: web.Request, name: str) -> tuple[str, str | None] | web.Response:
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


def refuse_if_busy(app: web.Application, *, reattach: bool = False) -> web.Response | None:
    retry_after = {"Retry-After": str(app[SETTINGS].current.http.retry_after)}
    if not app[ADMISSION].accepting:
        return answers.error(503, "shutting down", retry_after)
    try:
        app[REGISTRY].check_capacity(reattach=reattach)
    except RegistryFullError as exc:
        return answers.error(503, f"too many held requests ({exc}); retry later", retry_after)
    return None


def published_elsewhere(
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
