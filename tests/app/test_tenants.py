"""Each API key sees and acts on its own: two keys, ``alice`` and ``bob``, against every route
the application has.

The routes are read from the route table (:func:`notifier.routes.table`), from which the
application is built, so a route added later without a case here fails
:func:`test_every_route_has_a_two_key_case`; each case aims the route at one of
alice's executions (started here, or by another instance) and shows what alice gets and
that bob gets a 404 (or, for routes that need a role he lacks, a 403), so that he never
learns it exists. The roles (``approver``, ``admin``) are tested below the cases.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from notifier import routes
from notifier.apikeys import hash_key, new_key
from notifier.app.routing import ACCESS, Access
from notifier.config import ApiKeySettings
from notifier.dashboard.approval_links import ApprovalLinks
from notifier.requests.execution_input import STARTED_BY
from notifier.requests.ids import keyed_txn_id, made_for, new_txn_id
from notifier.requests.waiters import Status
from tests.support.http_app import Served, serving, settings

KEYS = {name: new_key() for name in ("alice", "bob", "carol", "root")}
ROLES = {"carol": ("approver",), "root": ("admin",)}
CONFIG = settings(
    api_keys={
        name: ApiKeySettings(sha256=hash_key(key), rate=1000, burst=1000, roles=ROLES.get(name, ()))
        for name, key in KEYS.items()
    }
)


def as_key(name: str, **headers: str) -> dict[str, str]:
    return {"x-api-key": KEYS[name], **headers}


async def answer(response: aiohttp.ClientResponse) -> tuple[int, str]:
    async with response:
        return response.status, await response.text()


@dataclass
class Alice:
    """One of alice's executions: its id, ARN and idempotency key."""

    txn_id: str
    arn: str
    idempotency_key: str


async def alices_execution(served: Served, where: str) -> Alice:
    """A running execution alice started: through this instance (``here``), or through
    another one, which this instance knows only from Step Functions (``elsewhere``)."""
    if where == "here":
        headers = as_key("alice", **{"Prefer": "respond-async", "Idempotency-Key": "a-1"})
        status, _ = await answer(await served.client.post("/hello", json={}, headers=headers))
        assert status == 202
        txn_id = await served.executions.next_started()
        assert txn_id == keyed_txn_id("hello", "a-1", "alice")
    else:
        txn_id = keyed_txn_id("hello", "a-1", "alice")
        served.executions.ran_elsewhere(
            txn_id,
            Status.RUNNING,
            input=json.dumps({"subtopic": "another-instance", STARTED_BY: "alice"}),
        )
    return Alice(txn_id, served.executions.elsewhere[txn_id]["executionArn"], "a-1")


STATIC_FILE = "/dashboard/static/dashboard.js"
STATIC_FILES = "/dashboard/static/{filename}"
STATIC_PAGES = (STATIC_FILES, "/dashboard/executions/{executionId}")
# An approval link is its own credential, whoever's key comes with it: a forged one is
# refused, the one the approval topic carried decides (``owner_reaches_it``).
APPROVAL_LINK = "/approvals/{approvalId}/link"
LINKS = ApprovalLinks(b"k" * 40, "http://notifier.example", 3600.0)
Request = tuple[str, str, dict[str, str]]
"""Method, path and query, extra headers."""
Case = Callable[[Alice], Request]

# Each route of the route table, aimed at alice's execution. ``None``: a route that names no
# execution (what it answers must then not mention alice's).
CASES: dict[tuple[str, str], Case | None] = {
    ("GET", "/executions/{txnId}"): lambda a: ("GET", f"/executions/{a.txn_id}?wait=0", {}),
    ("POST", "/executions/{txnId}/stop"): lambda a: ("POST", f"/executions/{a.txn_id}/stop", {}),
    ("POST", "/executions/{txnId}/redrive"): lambda a: (
        "POST", f"/executions/{a.txn_id}/redrive", {}
    ),
    ("GET", "/executions/{txnId}/history"): lambda a: (
        "GET", f"/executions/{a.txn_id}/history", {}
    ),
    ("GET", "/executions"): lambda a: ("GET", "/executions", {}),
    ("GET", "/{route}"): lambda a: ("GET", "/hello?wait=0", {"Idempotency-Key": a.idempotency_key}),
    ("POST", "/{route}"): lambda a: (
        "POST", "/hello", {"Idempotency-Key": a.idempotency_key, "Prefer": "respond-async"}
    ),
    ("GET", "/dashboard/details"): lambda a: ("GET", f"/dashboard/details?arn={a.arn}", {}),
    ("GET", "/dashboard/executions/{executionId}"): lambda a: (
        "GET", f"/dashboard/executions/{a.txn_id}", {}
    ),
    ("GET", "/dashboard/executions/{executionId}/graph"): lambda a: (
        "GET", f"/dashboard/executions/{a.txn_id}/graph", {}
    ),
    ("GET", "/dashboard/stats"): None,
    ("GET", "/events"): None,
    ("GET", "/metrics"): None,
    ("GET", "/openapi.json"): None,
    ("GET", "/approvals"): None,
    ("POST", "/approvals/{approvalId}"): lambda a: ("POST", f"/approvals/{a.txn_id}", {}),
    ("GET", APPROVAL_LINK): lambda a: ("GET", f"/approvals/{a.txn_id}/link?d=approve&t=1.x", {}),
    ("POST", APPROVAL_LINK): lambda a: ("POST", f"/approvals/{a.txn_id}/link?d=approve&t=1.x", {}),
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
    ("GET", "/"): None,
    ("GET", STATIC_FILES): lambda a: ("GET", STATIC_FILE, {}),
}  # fmt: skip
# An execution's ARN names it as well as its id does, on every route under /executions/.
BY_ARN: dict[str, Case] = {
    "/executions/{txnId}": lambda a: ("GET", f"/executions/{a.arn}?wait=0", {}),
    "/executions/{txnId}/stop": lambda a: ("POST", f"/executions/{a.arn}/stop", {}),
    "/executions/{txnId}/redrive": lambda a: ("POST", f"/executions/{a.arn}/redrive", {}),
    "/executions/{txnId}/history": lambda a: ("GET", f"/executions/{a.arn}/history", {}),
}


def route_table() -> list[tuple[str, str, Access]]:
    """Every (method, path, access) of the route table, and the dashboard's static files
    (served beside it, open)."""
    table = [(route.method, route.path, route.access) for route in routes.table(dashboard=True)]
    return [*table, ("GET", STATIC_FILES, Access.OPEN)]


def test_every_route_has_a_two_key_case() -> None:
    served = {(method, path) for method, path, _ in route_table()}
    assert served == set(CASES), f"routes without a case: {served - set(CASES)}"


async def test_the_application_serves_the_route_table_and_nothing_else() -> None:
    """The table is what is served: no route reaches the application another way."""
    async with serving(CONFIG, inbox=True) as served:
        access = served.app[ACCESS]
        table = {(method, path): level for method, path, level in route_table()}
        for route in served.app.router.routes():
            if route.method == "HEAD":
                continue
            info = route.resource.get_info() if route.resource is not None else {}
            if "prefix" in info:
                path = STATIC_FILES
            else:
                path = next(
                    r.path for r in routes.table(dashboard=True) if r.name == route.resource.name
                )
            assert table[(route.method, path)] is access[route], (route.method, path)


def requests_for(path: str, case: Case, alice: Alice) -> list[Request]:
    by_arn = BY_ARN.get(path)
    return [case(alice)] + ([by_arn(alice)] if by_arn is not None else [])


ROUTES_UNDER_TEST = route_table()


@pytest.mark.parametrize("where", ["here", "elsewhere"])
@pytest.mark.parametrize(
    ("method", "path", "access"),
    ROUTES_UNDER_TEST,
    ids=[f"{method} {path}" for method, path, _ in ROUTES_UNDER_TEST],
)
async def test_another_keys_execution_is_404_on_every_route(
    method: str, path: str, access: Access, where: str
) -> None:
    async with serving(CONFIG, inbox=True, links=LINKS) as served:
        alice = await alices_execution(served, where)
        assert served.inbox is not None
        served.inbox.add(alice.txn_id)  # her execution waits for an approval too
        case = CASES[(method, path)]
        if case is None:
            await names_no_execution(served, method, path, access, alice)
            return
        for verb, target, headers in requests_for(path, case, alice):
            status, text = await answer(
                await served.client.request(verb, target, json={}, headers=as_key("bob", **headers))
            )
            if path == "/{route}" and verb == "POST":
                # bob's own key makes his own transaction: never alice's.
                assert status == 202 and alice.txn_id not in text, text
                continue
            # The page of an execution is a static file: its data comes from the graph.
            if path in (*STATIC_PAGES, "/executions"):
                assert status == 200 and alice.txn_id not in text, text
                continue
            if access.roles or path == APPROVAL_LINK:
                assert status == 403 and alice.txn_id not in text, (verb, target, status, text)
                assert served.inbox.decided == {}
                continue
            # The very answer for an id that names nothing at all (by idempotency key, bob
            # names his own transaction, of which there is none).
            named = (
                alice.txn_id if "/executions/" in target else keyed_txn_id("hello", "a-1", "bob")
            )
            assert (status, json.loads(text)) == (404, {"message": f"no transaction {named!r}"}), (
                verb,
                target,
            )
        # What alice herself (or, for a role's route, a key with the role) gets instead.
        await owner_reaches_it(served, method, path, access, alice, case)


async def names_no_execution(
    served: Served, method: str, path: str, access: Access, alice: Alice
) -> None:
    if path == "/events":
        status, text = await answer(await served.client.get("/events", headers=as_key("bob")))
        assert status == 403 and alice.txn_id not in text
        return
    status, text = await answer(await served.client.request(method, path, headers=as_key("bob")))
    assert status == (403 if access.roles else 200), (path, status, text)
    assert alice.txn_id not in text


async def owner_reaches_it(
    served: Served, method: str, path: str, access: Access, alice: Alice, case: Case
) -> None:
    verb, target, headers = case(alice)
    if path == APPROVAL_LINK:
        target = LINKS.link(alice.txn_id, "approve").removeprefix(LINKS.public_url)
    who = "alice" if not access.roles else ("carol" if "approver" in access.roles else "root")
    body: dict[str, Any] = {"approved": True} if "approvals" in path else {}
    status, text = await answer(
        await served.client.request(verb, target, json=body, headers=as_key(who, **headers))
    )
    assert status in (200, 202, 409), (who, verb, target, status, text)
    if path == "/executions":
        assert alice.txn_id in text


# ---------------------------------------------------------------- roles


async def test_admin_sees_every_execution_and_a_client_only_its_own() -> None:
    async with serving(CONFIG) as served:
        for name in ("alice", "bob"):
            served.executions.ran_elsewhere(
                new_txn_id(name), Status.SUCCEEDED,
                input=json.dumps({STARTED_BY: name}),
            )  # fmt: skip
        served.executions.ran_elsewhere(new_txn_id(), Status.SUCCEEDED)  # someone else's

        async def listed(name: str) -> list[str]:
            response = await served.client.get("/executions", headers=as_key(name))
            return [e["transactionId"] for e in (await response.json())["executions"]]

        assert all(made_for(txn_id, "alice") for txn_id in await listed("alice"))
        assert len(await listed("alice")) == 1 and len(await listed("bob")) == 1
        assert len(await listed("root")) == 3
        for txn_id in await listed("root"):
            status, _ = await answer(
                await served.client.get(f"/executions/{txn_id}", headers=as_key("root"))
            )
            assert status == 200


async def test_a_client_needs_admin_for_the_dashboard_feed_and_the_metrics() -> None:
    async with serving(CONFIG) as served:
        for path in ("/events", "/metrics", "/dashboard/details?arn=x"):
            for name in ("alice", "carol"):
                status, text = await answer(await served.client.get(path, headers=as_key(name)))
                assert status == 403 and "admin" in text
        status, _ = await answer(await served.client.get("/metrics", headers=as_key("root")))
        assert status == 200


async def test_only_an_approver_decides_and_never_for_an_execution_it_started() -> None:
    async with serving(CONFIG, inbox=True) as served:
        inbox = served.inbox
        assert inbox is not None
        inbox.add("of-alice", new_txn_id("alice"))
        inbox.add("of-carol", new_txn_id("carol"))
        decide = {"approved": True, "comment": "ok"}
        for name in ("alice", "bob", "root"):  # clients and admins decide nothing
            status, _ = await answer(
                await served.client.post("/approvals/of-alice", json=decide, headers=as_key(name))
            )
            assert status == 403
        status, text = await answer(
            await served.client.post("/approvals/of-carol", json=decide, headers=as_key("carol"))
        )
        assert status == 403 and "another approver" in text
        assert not inbox.decided
        status, _ = await answer(
            await served.client.post("/approvals/of-alice", json=decide, headers=as_key("carol"))
        )
        assert status == 200
        # The decider and the decision stay recorded.
        assert inbox.decided == {"of-alice": "approved"} and inbox.decided_by == {
            "of-alice": "carol"
        }
        for name, expected in (("alice", 403), ("carol", 200), ("root", 200)):
            status, _ = await answer(await served.client.get("/approvals", headers=as_key(name)))
            assert status == expected


async def test_each_key_holds_no_more_than_its_own_budget() -> None:
    budgets = {
        name: ApiKeySettings(sha256=hash_key(key), rate=1000, burst=1000, max_held=2)
        for name, key in KEYS.items()
    }
    async with serving(settings(api_keys=budgets, max_held=10)) as served:
        held = [
            asyncio.ensure_future(
                served.client.post("/hello", json={}, headers=as_key("alice", Prefer="wait=30"))
            )
            for _ in range(2)
        ]
        started = [await served.executions.next_started() for _ in held]
        status, text = await answer(
            await served.client.post("/hello", json={}, headers=as_key("alice"))
        )
        assert status == 429 and "max_held" in text
        # Re-attaching counts too; another key still has its own budget.
        status, _ = await answer(
            await served.client.get(f"/executions/{started[0]}?wait=0", headers=as_key("alice"))
        )
        assert status == 429
        request = asyncio.ensure_future(
            served.client.post("/hello", json={}, headers=as_key("bob", Prefer="wait=30"))
        )
        bobs = await served.executions.next_started()
        for txn_id in [*started, bobs]:
            served.complete(txn_id)
        assert [(await answer(await r))[0] for r in [*held, request]] == [200, 200, 200]
        # Answered: alice's budget is free again.
        status, _ = await answer(
            await served.client.get(f"/executions/{started[0]}?wait=0", headers=as_key("alice"))
        )
        assert status == 200
