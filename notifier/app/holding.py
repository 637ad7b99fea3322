"""Holding a request until its transaction's end, and answering it: the final answer, or,
past the hold, 202 with the ``Location`` to re-attach at (and a last look at Step Functions
by the safety net, unless the client asked for an answer at once)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from typing import Any

from aiohttp import web

from notifier.app.preferences import Preferences
from notifier.app.routing import url_of
from notifier.app.state import EXECUTIONS, METRICS, SAFETY_NET, SETTINGS, TRACING
from notifier.aws.errors import AwsError
from notifier.logs import bind_transaction
from notifier.requests import answers
from notifier.requests.waiters import Completion, Transaction, utcnow

log = logging.getLogger(__name__)

REATTACH = "reattach"
"""The operation id of ``GET /executions/{txnId}``, where a 202's ``Location`` points."""


async def answer(
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
    app[METRICS].count_request(txn.route, status)
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
            process_data = await app[EXECUTIONS].process_data.read(txn.txn_id)
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
