"""The route table: every route of the HTTP API and the dashboard, in one place.

Each :class:`~notifier.app.routing.Route` declares its method, its path (OpenAPI's form), who
may call it (:class:`~notifier.app.routing.Access`), its handler and its OpenAPI operation.
The application's router, the access the authentication middleware enforces and
``/openapi.json`` are all made from it (:func:`notifier.app.routing.add_routes`,
:mod:`notifier.app.openapi`). To add a route, add it here, with a first path segment in
:data:`notifier.config.RESERVED_PATHS` so no route name shadows it.
"""

from __future__ import annotations

from notifier.app import execution_handlers, handlers, holding, operating
from notifier.app.openapi import aws_errors, content, error, held_answers, json_answer
from notifier.app.routing import Access, Operation, Route
from notifier.app.schemas import (
    HISTORY_PAGE,
    LIST_QUERY,
    PREFER,
    ROUTE_PATH,
    TRANSACTION_PATH,
    WAIT_QUERY,
    idempotency_key,
    page_query,
)
from notifier.config import RESERVED_PATHS, ROUTE_NAME_PATTERN
from notifier.dashboard import handlers as dashboard
from notifier.dashboard import schemas as dashboard_schemas
from notifier.requests.bodies import MAX_DEPTH
from notifier.requests.execution_input import MAX_INPUT_BYTES

# A route's name: any name a route may have, never one of the daemon's own endpoints.
ROUTE_NAME = f"(?!(?:{'|'.join(sorted(RESERVED_PATHS))})$){ROUTE_NAME_PATTERN}"
BUSY = (
    "too many held requests, draining, AWS throttling that outlasted the wait, or the Step "
    "Functions read budget spent"
)
BUSY_REATTACHING = (
    "too many re-attached requests held, draining, AWS throttling or the Step Functions read "
    "budget spent"
)

API = [
    Route(
        "GET",
        "/healthz",
        operating.healthz,
        Access.OPEN,
        Operation("healthz", "The process is alive", {"200": json_answer("Health", "alive")}),
    ),
    Route(
        "GET",
        "/readyz",
        operating.readyz,
        Access.OPTIONAL_KEY,
        Operation(
            "readyz",
            "Whether the daemon can serve, and how (with API keys required, the details only "
            "with a valid key)",
            {
                "200": json_answer(
                    "Readiness",
                    "ready, or degraded (MQTT down or not delivering, the fallbacks answer)",
                ),
                "503": json_answer("Readiness", "not ready (the body says why)"),
            },
        ),
    ),
    Route(
        "GET",
        "/metrics",
        operating.metrics_endpoint,
        Access.ADMIN,
        Operation(
            "metrics",
            "Prometheus metrics",
            {"200": content("text/plain", "text exposition format", {"type": "string"})},
        ),
    ),
    Route(
        "GET",
        "/openapi.json",
        operating.openapi_document,
        Access.API_KEY,
        Operation(
            "openapi",
            "This document",
            {"200": content("application/json", "OpenAPI 3.1", {"type": "object"})},
        ),
    ),
    Route(
        "GET",
        "/executions",
        execution_handlers.list_executions,
        Access.API_KEY,
        Operation(
            "listExecutions",
            "The routes' executions (ListExecutions), a page at a time",
            {
                "200": json_answer("ExecutionList", "newest first within each route"),
                "400": error("a bad status, limit or nextToken"),
                "404": error("unknown route"),
            }
            | aws_errors(),
            parameters=LIST_QUERY,
        ),
    ),
    Route(
        "GET",
        "/executions/{txnId}",
        handlers.reattach,
        Access.API_KEY,
        Operation(
            holding.REATTACH,
            "Re-attach to a transaction from any instance: its final answer, or 202 after wait",
            held_answers()
            | {
                "400": error("bad wait"),
                "404": error("no such transaction"),
                "503": error(BUSY_REATTACHING, "Retry-After"),
            },
            parameters=[TRANSACTION_PATH, WAIT_QUERY],
        ),
        held=True,
    ),
    Route(
        "POST",
        "/executions/{txnId}/stop",
        execution_handlers.stop,
        Access.API_KEY,
        Operation(
            "stop",
            "Stop the execution; requests held for it are answered 409",
            {
                "200": json_answer("Answer", "stopped"),
                "404": error("no such transaction"),
                "409": error("the execution had already ended (status says how)"),
            }
            | aws_errors(),
            parameters=[TRANSACTION_PATH],
        ),
    ),
    Route(
        "POST",
        "/executions/{txnId}/redrive",
        execution_handlers.redrive,
        Access.API_KEY,
        Operation(
            "redrive",
            "Redrive a failed, timed-out or aborted execution (RedriveExecution); "
            "re-attaches wait for its new end",
            {
                "202": json_answer("Answer", "redriven", ["Location", "Retry-After"]),
                "404": error("no such transaction"),
                "409": error("not redrivable: running, succeeded, or Express"),
            }
            | aws_errors(),
            parameters=[TRANSACTION_PATH],
        ),
    ),
    Route(
        "GET",
        "/executions/{txnId}/history",
        execution_handlers.execution_history,
        Access.API_KEY,
        Operation(
            "executionHistory",
            "The execution's history (GetExecutionHistory), a page at a time",
            {
                "200": json_answer("HistoryPage", "oldest first"),
                "400": error("a bad limit or nextToken"),
                "404": error("no such transaction"),
                "409": error("an Express workflow: it keeps no history"),
            }
            | aws_errors(),
            parameters=[TRANSACTION_PATH, *page_query("events")],
            schemas={"HistoryPage": HISTORY_PAGE},
        ),
    ),
    Route(
        "POST",
        "/{route}",
        handlers.start,
        Access.API_KEY,
        Operation(
            "start",
            "Start the route's workflow and hold the request until it ends",
            held_answers()
            | {
                "400": error(
                    "the body is not a JSON object (as RFC 8259 has it: no NaN or Infinity, no "
                    "lone surrogate, no integer longer than Python parses, 4,300 digits by "
                    f"default), or nested deeper than {MAX_DEPTH} levels; an empty body for a "
                    "route without default_input; or a malformed Idempotency-Key"
                ),
                "403": error("the route's start_roles name none of the API key's roles"),
                "404": error("unknown route"),
                "413": error(
                    "body too large, or the execution input it makes over Step Functions' "
                    f"limit ({MAX_INPUT_BYTES:,} bytes)"
                ),
                "422": error("the Idempotency-Key was used with another body (transactionId)"),
                "503": error(BUSY, "Retry-After"),
            },
            parameters=[
                ROUTE_PATH,
                PREFER,
                idempotency_key(
                    False,
                    "Makes the request safe to retry, at this or any other instance: the same "
                    "key and body give the same transaction (held, or its final answer), never "
                    "a second execution.",
                ),
            ],
            body={"type": "object"},
            body_required=False,
            body_description="An empty body sent without a Content-Type starts the route "
            "with its default_input.",
        ),
        patterns={"route": ROUTE_NAME},
        held=True,
    ),
    Route(
        "GET",
        "/{route}",
        handlers.reattach_by_key,
        Access.API_KEY,
        Operation(
            "reattachByKey",
            "Re-attach to the transaction an Idempotency-Key started on this route",
            held_answers()
            | {
                "400": error("a malformed Idempotency-Key, or a bad wait"),
                "404": error("unknown route, or no transaction with that key"),
                "405": error(
                    "no Idempotency-Key: the message and start say which POST starts the route",
                    "Allow",
                ),
                "503": error(BUSY_REATTACHING, "Retry-After"),
            },
            parameters=[
                ROUTE_PATH,
                idempotency_key(False, "The key the transaction was started with."),
                WAIT_QUERY,
            ],
        ),
        patterns={"route": ROUTE_NAME},
        held=True,
    ),
]

DASHBOARD = [
    Route(
        "GET",
        "/",
        dashboard.page,
        Access.OPEN,
        Operation("dashboard", "The dashboard page", {"200": content("text/html", "HTML")}),
    ),
    Route(
        "GET",
        "/events",
        dashboard.events,
        Access.ADMIN,
        Operation(
            "events",
            "The dashboard's Server-Sent Events: hello, snapshot, execution, approvals",
            {"200": content("text/event-stream", "an endless stream")},
        ),
    ),
    Route(
        "GET",
        "/dashboard/details",
        dashboard.details,
        Access.ADMIN,
        Operation(
            "details",
            "One execution of a route: input, process data, result and steps",
            {
                "200": json_answer("Details", "the execution"),
                "400": error("no arn"),
                "404": error("no such execution, or not one of a route"),
            }
            | aws_errors(),
            parameters=[
                {"name": "arn", "in": "query", "required": True, "schema": {"type": "string"}}
            ],
            schemas={"Details": dashboard_schemas.DETAILS},
        ),
    ),
    Route(
        "GET",
        "/dashboard/executions/{executionId}",
        dashboard.execution_page,
        Access.OPEN,
        Operation(
            "executionPage",
            "The page of one execution, with its graph",
            {"200": content("text/html", "HTML")},
            parameters=[dashboard_schemas.EXECUTION_ID],
        ),
    ),
    Route(
        "GET",
        "/dashboard/executions/{executionId}/graph",
        dashboard.graph,
        Access.ADMIN,
        Operation(
            "executionGraph",
            "One execution's definition and what each of its states did",
            {
                "200": json_answer("Graph", "the execution"),
                "404": error("no such execution, or not one of a route"),
            }
            | aws_errors(),
            parameters=[dashboard_schemas.EXECUTION_ID],
            schemas={"Graph": dashboard_schemas.GRAPH},
        ),
    ),
    Route(
        "GET",
        "/dashboard/stats",
        dashboard.stats,
        Access.ADMIN,
        Operation(
            "stats",
            "The counters behind the dashboard's charts",
            {"200": json_answer("Stats", "the daemon's counters")},
            schemas={"Stats": dashboard_schemas.STATS},
        ),
    ),
    Route(
        "GET",
        "/approvals",
        dashboard.list_approvals,
        Access.APPROVER_OR_ADMIN,
        Operation(
            "approvals",
            "Pending human approvals, oldest first",
            {
                "200": content(
                    "application/json",
                    "enabled says whether an approval queue is configured",
                    dashboard_schemas.APPROVAL_LIST,
                )
            }
            | aws_errors(),
            schemas={"Approval": dashboard_schemas.APPROVAL},
        ),
    ),
    Route(
        "POST",
        "/approvals/{approvalId}",
        dashboard.decide,
        Access.APPROVER,
        Operation(
            "decide",
            "Decide: SendTaskSuccess (approved) or SendTaskFailure (rejected)",
            {
                "200": content("application/json", "decided", dashboard_schemas.DECIDED),
                "400": error("the body is not a decision"),
                "403": error("the execution was started by the approver's own API key"),
                "404": error("no such pending approval, or no approval queue"),
                "409": error("already decided, or the execution no longer waits"),
                "413": error("body too large"),
            }
            | aws_errors(),
            parameters=[
                {"name": "approvalId", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            body=dashboard_schemas.DECISION,
        ),
    ),
]

LINK_DECISION = {"enum": ["approve", "reject"], "description": "the decision the link makes"}
LINK_TOKEN = {"type": "string", "description": "the link's signed token: its credential"}
LINK_PARAMETERS = [
    {"name": "approvalId", "in": "path", "required": True, "schema": {"type": "string"}},
    {"name": "d", "in": "query", "required": True, "schema": LINK_DECISION},
    {"name": "t", "in": "query", "required": True, "schema": LINK_TOKEN},
]
LINK_REFUSALS = {
    "400": content("text/html", "a malformed link"),
    "403": content("text/html", "a link not signed for this request and decision"),
    "404": content("text/html", "no such approval, or no approval links"),
    "409": content("text/html", "already decided, or the execution no longer waits"),
    "410": content("text/html", "the link has expired"),
}
DASHBOARD += [
    Route(
        "GET",
        "/approvals/{approvalId}/link",
        dashboard.approval_link,
        Access.OPEN,
        Operation(
            "approvalLinkPage",
            "An approval link: a page asking to confirm its decision (deciding nothing)",
            {"200": content("text/html", "the confirmation page")} | LINK_REFUSALS,
            parameters=LINK_PARAMETERS,
        ),
    ),
    Route(
        "POST",
        "/approvals/{approvalId}/link",
        dashboard.approval_link,
        Access.OPEN,
        Operation(
            "approvalLinkDecide",
            "An approval link confirmed: the decision it makes, recorded as made by a link",
            {"200": content("text/html", "decided")}
            | LINK_REFUSALS
            | {"503": content("text/html", "AWS failed or throttled: try again")},
            parameters=LINK_PARAMETERS,
            body=dashboard_schemas.LINK_FORM,
            body_required=False,
            body_description="The confirmation page's form (a comment, optional); the "
            "link's token is in its URL.",
        ),
        form=True,
    ),
]


def table(dashboard: bool) -> list[Route]:
    """The routes served: the API's, and the dashboard's when it is on."""
    return [*API, *(DASHBOARD if dashboard else [])]
