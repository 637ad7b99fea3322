"""The dashboard's handlers, declared in the route table (:mod:`notifier.routes`).

``GET /`` is the page (its scripts and styles are in ``static/``, shipped in the package);
``GET /events`` streams the board to it as Server-Sent Events; ``GET /dashboard/details``
shows one execution in full; ``GET /dashboard/executions/{executionId}`` draws one execution
as a graph of its states, from ``.../graph``; ``GET /dashboard/stats`` gives the main page's
charts their numbers; ``GET /approvals`` and ``POST /approvals/{approvalId}`` list and decide
the pending human approvals; ``/approvals/{approvalId}/link`` is an approval link's page.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError

from notifier.app.state import (
    API_KEY,
    API_KEY_NAME,
    EXECUTIONS,
    INSTANCE_ID,
    METRICS,
    REGISTRY,
    SETTINGS,
)
from notifier.aws.errors import AwsError
from notifier.dashboard.approval_links import DECIDED_BY, LinkError
from notifier.dashboard.approval_table import (
    DECIDING,
    MAX_COMMENT,
    PENDING,
    ApprovalDecidedError,
    ApprovalNotFoundError,
    Decision,
)
from notifier.dashboard.approvals import ApprovalInbox
from notifier.dashboard.details import execution_details
from notifier.dashboard.state import BOARD, GRAPHS, INBOX, LINKS, STATUS_FEED
from notifier.dashboard.stats import snapshot
from notifier.requests import answers
from notifier.requests.bodies import read_json_object
from notifier.requests.history import UnknownExecutionError
from notifier.requests.ids import made_for

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
HEARTBEAT_SECONDS = 15.0


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def execution_page(request: web.Request) -> web.FileResponse:
    """The page of one execution; its script asks ``.../graph`` for the rest."""
    return web.FileResponse(STATIC / "execution.html", headers={"Cache-Control": "no-cache"})


async def graph(request: web.Request) -> web.Response:
    """``GET /dashboard/executions/<transaction id or execution ARN>/graph``: the execution's
    definition and what each state did (:mod:`notifier.dashboard.graph`)."""
    app = request.app
    settings = app[SETTINGS].current
    execution_id = request.match_info["executionId"]
    try:
        arn = await _execution_arn(app, execution_id)
        if arn is None:
            return answers.error(404, f"no execution {execution_id!r} of this daemon's routes")
        body = await app[GRAPHS].graph(settings.routes, arn)
    except UnknownExecutionError as exc:
        return answers.error(404, str(exc))
    except AwsError as exc:
        return answers.aws_error(exc, settings.http.retry_after)
    return web.json_response(body, dumps=lambda o: json.dumps(o, default=str))


async def _execution_arn(app: web.Application, execution_id: str) -> str | None:
    """An execution ARN as it is; a transaction id through this daemon's own transactions,
    else Step Functions (any instance's)."""
    if execution_id.startswith("arn:"):
        return execution_id
    if (known := app[REGISTRY].get(execution_id)) is not None:
        return known.execution_arn
    located = await app[EXECUTIONS].locate(execution_id)
    return None if located is None else str(located[1]["executionArn"])


async def stats(request: web.Request) -> web.Response:
    """The counters behind the main page's charts (:mod:`notifier.dashboard.stats`)."""
    app = request.app
    return web.json_response(snapshot(app[METRICS], app[SETTINGS].current.http.max_held))


async def events(request: web.Request) -> web.StreamResponse:
    """``text/event-stream``: ``hello``, ``snapshot`` and ``approvals``, then ``execution``
    and ``approvals`` events as things change, and a comment line every 15 s."""
    app = request.app
    settings = app[SETTINGS].current
    hello = {
        "instanceId": app[INSTANCE_ID],
        "routes": sorted(settings.routes),
        "approvals": INBOX in app,
        "statusFeed": STATUS_FEED in app,
    }
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    await response.write(f"retry: 2000\nevent: hello\ndata: {json.dumps(hello)}\n\n".encode())
    with app[BOARD].subscribe() as subscription:
        while True:
            try:
                event = await subscription.next(HEARTBEAT_SECONDS)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if event is None:
                break
            await response.write(event.encode())
    return response


async def details(request: web.Request) -> web.Response:
    """``GET /dashboard/details?arn=<executionArn>``."""
    app = request.app
    arn = request.query.get("arn", "")
    if not arn:
        return answers.error(400, "arn (an execution ARN) is required")
    settings = app[SETTINGS].current
    try:
        body = await execution_details(app[EXECUTIONS], settings.routes, arn)
    except UnknownExecutionError as exc:
        return answers.error(404, str(exc))
    except AwsError as exc:
        return answers.aws_error(exc, settings.http.retry_after)
    return web.json_response(body, dumps=lambda o: json.dumps(o, default=str))


async def list_approvals(request: web.Request) -> web.Response:
    """Every instance's pending approvals, as the table has them now."""
    inbox = request.app.get(INBOX)
    if inbox is None:
        return web.json_response({"approvals": [], "enabled": False})
    try:
        pending = await inbox.refresh()
    except (ClientError, BotoCoreError) as exc:
        error = AwsError.wrap("Query", exc)
        return answers.aws_error(error, request.app[SETTINGS].current.http.retry_after)
    return web.json_response({"approvals": [a.to_json() for a in pending], "enabled": True})


async def decide(request: web.Request) -> web.Response:
    """``POST /approvals/{approvalId}`` with ``{"approved": bool, "comment": str}``."""
    app = request.app
    inbox = app.get(INBOX)
    approval_id = request.match_info["approvalId"]
    if inbox is None:
        return answers.error(
            404, "approvals are not configured ([dashboard] approval_queue_url, approval_table)"
        )
    decision = await _decision(request)
    if isinstance(decision, web.Response):
        return decision
    approved, comment = decision
    try:
        if (refusal := await _refuse_own_execution(request, inbox, approval_id)) is not None:
            return refusal
        outcome = await inbox.decide(approval_id, approved, comment, request.get(API_KEY_NAME))
    except ApprovalNotFoundError:
        return answers.error(404, f"no pending approval {approval_id!r}")
    except ApprovalDecidedError as exc:
        return answers.error(409, f"approval {approval_id!r} {exc}", decision=exc.decision)
    except AwsError as exc:
        return answers.aws_error(exc, app[SETTINGS].current.http.retry_after)
    return web.json_response({"id": approval_id, "decision": outcome})


async def _refuse_own_execution(
    request: web.Request, inbox: ApprovalInbox, approval_id: str
) -> web.Response | None:
    """403 for an approver deciding the approval of an execution its own key started (its
    name carries the key's owner tag); :class:`ApprovalNotFoundError` for no such approval."""
    key = request.get(API_KEY)
    if key is None:  # keys off
        return None
    approval = await inbox.find(approval_id)
    if approval is None:
        raise ApprovalNotFoundError(approval_id)
    if made_for(approval.execution_name, key.name):
        return answers.error(
            403, f"API key {key.name!r} started this execution: another approver decides it"
        )
    return None


async def _decision(request: web.Request) -> tuple[bool, str] | web.Response:
    body = await read_json_object(request, request.app[SETTINGS].current.http.max_body_bytes)
    if isinstance(body, web.Response):
        return body
    if not isinstance(body.get("approved"), bool):
        return answers.error(400, 'body must be {"approved": true|false, "comment": "..."}')
    comment = body.get("comment", "")
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        return answers.error(400, f"comment must be a string of at most {MAX_COMMENT} characters")
    return body["approved"], comment


async def approval_link(request: web.Request) -> web.Response:
    """``GET`` or ``POST /approvals/{approvalId}/link?d=approve|reject&t=<token>``: the link
    is its own credential (:mod:`notifier.dashboard.approval_links`). GET shows what the
    link decides and a form to confirm; only that form's POST decides."""
    app = request.app
    approval_id = request.match_info["approvalId"]
    inbox, links = app.get(INBOX), app.get(LINKS)
    if inbox is None or links is None:
        return _link_page(404, "No approval links here", "This daemon sends no approval links.")
    try:
        decision = links.check(approval_id, request.query.get("d", ""), request.query.get("t", ""))
        if request.method == "GET":
            return await _confirmation(inbox, approval_id, decision)
        form = await request.post()
        comment = str(form.get("comment", ""))[:MAX_COMMENT]
        approved = decision is Decision.APPROVED
        outcome = await inbox.decide(approval_id, approved, comment, DECIDED_BY)
    except LinkError as exc:
        return _link_page(exc.status, "This link decides nothing", str(exc))
    except ApprovalNotFoundError:
        return _no_such_approval()
    except ApprovalDecidedError as exc:
        return _already_decided(exc.decision)
    except AwsError as exc:
        retry = app[SETTINGS].current.http.retry_after
        return _link_page(503, "Try again", f"The decision was not sent ({exc}); try again.",
                          {"Retry-After": str(retry)})  # fmt: skip
    return _link_page(200, f"Thank you: {outcome}", f"The request is {outcome}.")


async def _confirmation(inbox: ApprovalInbox, approval_id: str, decision: Decision) -> web.Response:
    """The page that asks to confirm, for a request that waits."""
    state = await inbox.state(approval_id)
    approval = await inbox.find(approval_id) if state == PENDING else None
    if state is None:
        return _no_such_approval()
    if approval is None:
        return _already_decided(str(state))
    verb = "Approve" if decision is Decision.APPROVED else "Reject"
    form = (
        '<form method="post">'
        f'<p><label>Comment (optional)<br><textarea name="comment" maxlength="{MAX_COMMENT}"'
        ' rows="4" cols="60"></textarea></label></p>'
        f'<p><button type="submit">{verb}</button></p></form>'
    )
    name = approval.execution_name
    file = json.dumps(approval.file)
    return _link_page(200, f"{verb} {name}?", f"{name} waits for a decision on {file}.", form=form)


def _no_such_approval() -> web.Response:
    return _link_page(404, "No such approval", "This link names no approval request.")


def _already_decided(state: str) -> web.Response:
    if state in (DECIDING, "being decided"):
        return _link_page(409, "Being decided", "Someone is deciding this request right now.")
    return _link_page(409, "Already decided", f"This request was decided: {state}.")


def _link_page(
    status: int,
    title: str,
    message: str,
    headers: dict[str, str] | None = None,
    form: str = "",
) -> web.Response:
    """A page of its own for a link's reader: no script, nothing loaded from elsewhere."""
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>{form}</body></html>"
    )
    # The URL carries the token: never in a Referer elsewhere. "same-origin" rather than the
    # daemon's "no-referrer", with which a browser sends the form's POST as `Origin: null`
    # and the daemon (keys off) would take it for another site's.
    return web.Response(
        status=status,
        text=body,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "same-origin", **(headers or {})},
    )
