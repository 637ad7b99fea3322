"""The HTTP API's handlers of a transaction started before: stopping and redriving its
execution, reading its history, and listing the routes' executions (starting, holding and
re-attaching are in :mod:`notifier.app.handlers`). Who may call each is declared in the
route table (:mod:`notifier.routes`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from notifier.app import owners
from notifier.app.handlers import published_elsewhere, transaction_named
from notifier.app.holding import REATTACH
from notifier.app.routing import url_of
from notifier.app.state import EXECUTIONS, REGISTRY, SETTINGS
from notifier.aws.errors import AwsError
from notifier.requests import answers
from notifier.requests.descriptions import completion_from_description
from notifier.requests.execution_input import started_by
from notifier.requests.history import UnknownExecutionError, history_page
from notifier.requests.ids import is_txn_id
from notifier.requests.listing import (
    LIST_LIMIT,
    LIST_STATUSES,
    MAX_LIST_LIMIT,
    InvalidPageTokenError,
)
from notifier.requests.waiters import Completion, Status, Transaction, utcnow

log = logging.getLogger(__name__)


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
    found = transaction_named(request, request.match_info["txnId"])
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
        txn.poll = published_elsewhere(app, txn, named.description)
        txn.completion = completion_from_description(named.description)
    registry.reopen(txn_id)
    return answers.running(
        txn,
        location=url_of(request, REATTACH, txnId=txn_id),
        received_at=utcnow(),
        retry_after=settings.http.retry_after,
        message="redriven",
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
