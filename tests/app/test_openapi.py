"""The OpenAPI document against the application: the routes it serves, who may call them, and
real answers of every route, each checked against what the document says of it."""

from __future__ import annotations

import asyncio
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import jsonschema
import pytest

from notifier import routes
from notifier.apikeys import hash_key, new_key
from notifier.app import openapi
from notifier.app.routing import ACCESS, ROUTES, Access
from notifier.app.state import ADMISSION, AWS_REACHABILITY
from notifier.app.wiring import http_app
from notifier.aws.errors import AwsError
from notifier.config import RESERVED_PATHS, ApiKeySettings
from notifier.dashboard import web as dashboard
from notifier.dashboard.approval_links import ApprovalLinks
from notifier.requests.ids import new_txn_id
from notifier.requests.waiters import Status
from tests.support.executions import INSTANCE
from tests.support.http_app import Served, serving, settings

# The page's scripts and styles are files, not API.
NOT_API = "/dashboard/static"
SECURITY = {
    Access.OPEN: [],
    Access.OPTIONAL_KEY: [{"apiKey": []}, {}],
    Access.API_KEY: [{"apiKey": []}],
    Access.APPROVER: [{"apiKey": []}],
    Access.APPROVER_OR_ADMIN: [{"apiKey": []}],
    Access.ADMIN: [{"apiKey": []}],
}


def documented_path(canonical: str) -> str:
    """aiohttp's ``/{route:<pattern>}`` is the document's ``/{route}``."""
    return re.sub(r"\{(\w+):.*\}$", r"{\1}", canonical)


def served_routes(keys_required: bool) -> tuple[dict[tuple[str, str], Access], dict[str, Any]]:
    """What the application serves, by method and documented path with its access (read from
    its router, not from the table), and the document it would serve."""
    config = settings(api_keys={} if keys_required else None)
    app = http_app(config, INSTANCE, routes.table(dashboard=True))
    dashboard.install(app)
    served = {
        (route.method, documented_path(route.resource.canonical)): access
        for route, access in app[ACCESS].items()
        if route.method != "HEAD"
        and route.resource is not None
        and not route.resource.canonical.startswith(NOT_API)
    }
    return served, openapi.document(app[ROUTES], config.routes, keys_required)


@pytest.mark.parametrize("keys_required", [True, False])
def test_the_document_describes_every_route_served_with_its_access(keys_required: bool) -> None:
    served, document = served_routes(keys_required)
    documented = {
        (method.upper(), path): operation.get("security", [])
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }
    assert documented.keys() == served.keys()
    for operation, access in served.items():
        keyed = keys_required and access is not Access.OPEN
        assert documented[operation] == (SECURITY[access] if keyed else []), operation
        responses = document["paths"][operation[1]][operation[0].lower()]["responses"]
        taking_a_key = access not in (Access.OPEN, Access.OPTIONAL_KEY)
        assert ("401" in responses) == taking_a_key, operation
        if keys_required and access.roles:  # a key without the role the route needs
            assert "403" in responses, operation
    route_names = document["components"]["schemas"]["RouteName"]["enum"]
    assert route_names == sorted(settings().routes)


def test_without_the_dashboard_the_document_leaves_it_out() -> None:
    document = openapi.document(routes.table(dashboard=False), ["hello"], True)
    assert not {"/", "/events", "/approvals"} & document["paths"].keys()


def test_no_route_name_shadows_a_path_of_the_table() -> None:
    first_segments = {
        route.path.split("/")[1] for route in routes.table(dashboard=True) if route.path != "/"
    }
    assert first_segments - {"{route}", "openapi.json"} <= RESERVED_PATHS


@dataclass
class Exchange:
    method: str
    path: str
    status: int
    headers: dict[str, str]
    body: bytes


class Recorder:
    """Makes requests, with the API key of the name given, and keeps every answer."""

    def __init__(self, served: Served, keys: dict[str, str]) -> None:
        self.served = served
        self.keys = keys
        self.exchanges: list[Exchange] = []

    async def __call__(
        self, method: str, path: str, *, key: str | None = "ci", **kwargs: Any
    ) -> Exchange:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["x-api-key"] = self.keys[key]
        async with self.served.client.request(method, path, headers=headers, **kwargs) as r:
            body = (
                await r.content.readline()
                if r.content_type == "text/event-stream"
                else (await r.read())
            )
            exchange = Exchange(method, path.split("?")[0], r.status, dict(r.headers), body)
        self.exchanges.append(exchange)
        return exchange

    async def held(self, path: str, status: Status, **completion: Any) -> Exchange:
        """POST ``path`` and complete the execution it started with ``status``."""
        request = asyncio.ensure_future(self("POST", path, json={}, headers={"Prefer": "wait=30"}))
        txn_id = await self.served.executions.next_started()
        self.served.complete(txn_id, status, **completion)
        return await request


async def every_route(record: Recorder) -> None:
    """Requests to every route, for each the answers a client meets."""
    served, fake = record.served, record.served.executions
    await record("GET", "/healthz", key=None)
    await record("GET", "/readyz", key=None)
    served.app[AWS_REACHABILITY].checked_at = -math.inf
    fake.unreachable = "AccessDenied"
    await record("GET", "/readyz", key=None)
    fake.unreachable = None
    served.app[AWS_REACHABILITY].checked_at = -math.inf
    await record("GET", "/", key=None)
    await record("GET", "/metrics")
    await record("GET", "/openapi.json")
    await record("GET", "/events")

    for status in Status:
        if status.final:
            await record.held("/hello", status, output={"a": 1}, error="E", cause="C")
    await record.held("/p1", Status.SUCCEEDED)
    fake.failures["GetObject"] = AwsError("GetObject", "NoSuchKey", "gone")
    await record.held("/p1", Status.SUCCEEDED)
    del fake.failures["GetObject"]
    running = await record("POST", "/hello", json={}, headers={"Prefer": "wait=0.01"})
    for body in ({"data": b"{"}, {"json": [1]}, {"json": {"x": "y" * 200}}):
        await record("POST", "/hello", **body)
    await record("POST", "/nowhere", json={})
    await record("POST", "/hello", key=None, json={})
    await record("POST", "/hello", key="slow", json={})
    for code in ("AccessDenied", "ThrottlingException"):
        fake.failures["StartExecution"] = AwsError("StartExecution", code, "no")
        await record("POST", "/hello", json={})
    del fake.failures["StartExecution"]
    served.app[ADMISSION].accepting = False
    await record("POST", "/hello", json={})
    await record("GET", f"/executions/{new_txn_id()}")
    served.app[ADMISSION].accepting = True

    txn_id = running.headers["Location"].rsplit("/", 1)[1]
    await record("GET", f"/executions/{txn_id}?wait=0")
    elsewhere = new_txn_id()
    fake.ran_elsewhere(elsewhere, Status.SUCCEEDED, output='{"b": 2}')
    await record("GET", f"/executions/{elsewhere}?wait=0")
    await record("GET", f"/executions/{new_txn_id()}")
    await record("GET", f"/executions/{txn_id}?wait=soon")
    fake.failures["HeadObject"] = AwsError("HeadObject", "AccessDenied", "no")
    await record("GET", f"/executions/{new_txn_id()}")
    del fake.failures["HeadObject"]

    await record("POST", f"/executions/{txn_id}/stop")
    await record("POST", f"/executions/{txn_id}/stop")
    await record("POST", f"/executions/{new_txn_id()}/stop")
    other = new_txn_id()
    fake.ran_elsewhere(other, Status.RUNNING)
    for code in ("AccessDenied", "ThrottlingException"):
        fake.failures["StopExecution"] = AwsError("StopExecution", code, "no")
        await record("POST", f"/executions/{other}/stop")
    del fake.failures["StopExecution"]

    await record("POST", f"/executions/{other}/redrive")
    failed = new_txn_id()
    fake.ran_elsewhere(failed, Status.FAILED, error="E", cause="C")
    await record("POST", f"/executions/{failed}/redrive")
    await record("POST", f"/executions/{new_txn_id()}/redrive")
    await record("GET", f"/executions/{other}/history", params={"limit": "1"})
    await record("GET", f"/executions/{other}/history", params={"nextToken": "1"})
    await record("GET", f"/executions/{other}/history", params={"nextToken": "x"})
    await record("GET", f"/executions/{other}/history", params={"limit": "0"})
    await record("GET", f"/executions/{new_txn_id()}/history")

    arn = fake.ran_elsewhere(new_txn_id(), Status.FAILED, error="E", cause="C")
    await record("GET", "/dashboard/details", params={"arn": arn})
    await record("GET", "/dashboard/details")
    await record("GET", "/dashboard/details", params={"arn": arn.replace("Hello", "Other")})
    await record("GET", f"/dashboard/executions/{arn}")
    await record("GET", f"/dashboard/executions/{arn}/graph")
    await record("GET", f"/dashboard/executions/{new_txn_id()}/graph")
    await record("GET", "/dashboard/stats")
    running = fake.ran_elsewhere(new_txn_id(), Status.RUNNING)
    fake.failures["DescribeExecution"] = AwsError("DescribeExecution", "AccessDenied", "no")
    await record("GET", "/dashboard/details", params={"arn": arn})
    failed_graph = await record("GET", f"/dashboard/executions/{running}/graph")
    assert failed_graph.status == 502
    del fake.failures["DescribeExecution"]

    assert served.inbox is not None
    served.inbox.add("a1")
    served.inbox.add("a2")
    await record("GET", "/approvals")
    await record("POST", "/approvals/a1", json={"approved": True, "comment": "fine"})
    await record("POST", "/approvals/a1", json={"approved": True})
    await record("POST", "/approvals/nope", json={"approved": True})
    await record("POST", "/approvals/a2", json={"approved": "yes"})
    json_body = {"Content-Type": "application/json"}
    await record("POST", "/approvals/a2", data=b"x" * 300, headers=json_body)
    await record("POST", "/approvals/a2", data=b'{"approved": true}')  # not sent as JSON
    await record("POST", "/hello", data=b"{}", headers={"Origin": "https://evil.example"})
    served.inbox.failure = AwsError("SendTaskFailure", "ThrottlingException", "slow")
    await record("POST", "/approvals/a2", json={"approved": False})
    await approval_links(record)

    await keyed_and_listed(record)


LINKS = ApprovalLinks(b"k" * 40, "https://notifier.example", 3600.0)


async def approval_links(record: Recorder) -> None:
    """An approval link's page and its form, the link refused, and AWS failing."""
    inbox = record.served.inbox
    assert inbox is not None
    inbox.add("a3")

    def link(approval_id: str, links: ApprovalLinks = LINKS) -> str:
        return links.link(approval_id, "approve").removeprefix(links.public_url)

    await record("POST", link("a3"), key=None, data={"comment": "fine"})  # AWS fails: 503
    inbox.failure = None
    await record("GET", link("a3"), key=None)
    await record("POST", link("a3"), key=None, data={"comment": "fine"})
    await record("POST", link("a3"), key=None)
    await record("GET", link("a3"), key=None)
    await record("GET", link("nope"), key=None)
    await record("GET", "/approvals/a3/link?d=maybe&t=1.x", key=None)
    await record("POST", "/approvals/a3/link?d=approve&t=1.x", key=None)
    expired = ApprovalLinks(LINKS.secret, LINKS.public_url, -1.0)
    await record("GET", link("a3", expired), key=None)


async def keyed_and_listed(record: Recorder) -> None:
    """Idempotency keys, re-attach by key and by ARN, and the listing."""
    served, fake = record.served, record.served.executions
    keyed = {"Idempotency-Key": '"order-1"', "Prefer": "respond-async"}
    first = await record("POST", "/hello", json={"n": 1}, headers=keyed)
    await record("POST", "/hello", json={"n": 1}, headers=keyed)
    await record("POST", "/hello", json={"n": 2}, headers=keyed)
    await record("POST", "/hello", json={}, headers={"Idempotency-Key": "two words"})
    await record("GET", "/hello?wait=0", headers=keyed)
    await record("GET", "/hello?wait=0", headers={"Idempotency-Key": "unknown"})
    await record("GET", "/hello")
    served.complete(json.loads(first.body)["transactionId"], output={"n": 1})
    await record("GET", "/hello", headers=keyed)
    arn = json.loads(first.body)["executionArn"]
    await record("GET", f"/executions/{arn}?wait=0")
    await record("POST", f"/executions/{arn}/stop")
    await record("GET", f"/executions/{arn.replace('Hello', 'Other')}")
    await record("GET", "/executions?limit=1")
    page = await record("GET", "/executions?route=hello&status=SUCCEEDED")
    assert json.loads(page.body)["executions"]
    await record("GET", "/executions?limit=0")
    await record("GET", "/executions?route=nowhere")
    fake.failures["ListExecutions"] = AwsError("ListExecutions", "AccessDenied", "no")
    await record("GET", "/executions")
    del fake.failures["ListExecutions"]


def operation_of(document: dict[str, Any], method: str, path: str) -> tuple[str, dict[str, Any]]:
    """The documented path and operation a request went to (literal paths before templates)."""
    candidates = []
    for template, operations in document["paths"].items():
        pattern = re.sub(r"\{\w+\}", "[^/]+", template)
        if method.lower() in operations and re.fullmatch(pattern, path):
            candidates.append((template.count("{"), template))
    assert candidates, f"{method} {path} is not in the document"
    template = min(candidates)[1]
    return template, document["paths"][template][method.lower()]


def check(document: dict[str, Any], exchange: Exchange) -> None:
    template, operation = operation_of(document, exchange.method, exchange.path)
    where = f"{exchange.method} {exchange.path} -> {exchange.status}"
    response = operation["responses"].get(str(exchange.status))
    assert response is not None, f"{where}: status not documented for {template}"
    for header in response.get("headers", {}):
        assert header in exchange.headers, f"{where}: no {header} header"
    content = response.get("content", {})
    media_type = exchange.headers.get("Content-Type", "").split(";")[0]
    assert media_type in content, f"{where}: {media_type} not documented ({list(content)})"
    schema = content[media_type].get("schema")
    if schema is None:
        return
    body = exchange.body.decode()
    instance = json.loads(body) if media_type == "application/json" else body
    # The document's components beside the schema, for its "#/components/..." references.
    validator = jsonschema.Draft202012Validator({**schema, "components": document["components"]})
    errors = [
        f"/{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(instance)
    ]
    assert not errors, f"{where}: {errors}"


async def test_real_answers_of_every_route_are_as_documented() -> None:
    key, slow = new_key(), new_key()
    config = settings(
        max_body_bytes=100,
        api_keys={
            "ci": ApiKeySettings(
                sha256=hash_key(key), rate=1000, burst=1000, roles=("approver", "admin")
            ),
            "slow": ApiKeySettings(sha256=hash_key(slow), rate=0.001, burst=0),
        },
    )
    async with serving(config, inbox=True, links=LINKS) as served:
        record = Recorder(served, {"ci": key, "slow": slow})
        await every_route(record)
        async with served.client.get("/openapi.json", headers={"x-api-key": key}) as response:
            document = await response.json()
    for exchange in record.exchanges:
        check(document, exchange)
    exercised = {operation_of(document, e.method, e.path)[0] for e in record.exchanges}
    assert exercised == set(document["paths"])
    statuses = {e.status for e in record.exchanges}
    assert statuses >= {200, 202, 400, 401, 404, 409, 413, 422, 429, 502, 503, 504}
