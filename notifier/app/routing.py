"""Routes as data: what a route of the route table (:mod:`notifier.routes`) declares, and
how an application is built from it.

A :class:`Route` names its method, path (in OpenAPI's form, ``/executions/{txnId}``), who
may call it (:class:`Access`), its handler and its :class:`Operation`, the OpenAPI operation
that documents it. :func:`add_routes` puts routes on an application: on its router (a
resource named by the operation's id), in its access table that the authentication
middleware reads, and in :data:`ROUTES`, from which ``/openapi.json`` is made. A route added
any other way has no declaration, and the application refuses to start
(:class:`UndeclaredAccessError`): nothing is open by accident.
"""

from __future__ import annotations

import contextlib
import enum
import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

from notifier.apikeys import KeyBudgetError
from notifier.app.state import API_KEY, API_KEYS, SETTINGS
from notifier.requests import answers

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JsonObject = Mapping[str, Any]


class Access(enum.Enum):
    """Who may call a route when ``[http] require_api_key`` is on (with keys off, anyone)."""

    OPEN = "open"
    """Anyone: the health check and the dashboard page."""
    OPTIONAL_KEY = "optional key"
    """Anyone; with API keys required, only a valid key within its rate is
    :data:`~notifier.app.state.AUTHORIZED` (the handler shows it more)."""
    API_KEY = "api key"
    """A valid API key within its rate; what it reaches is its own (the handlers see to it)."""
    APPROVER = "approver"
    """A key with the ``approver`` role: deciding approvals."""
    APPROVER_OR_ADMIN = "approver or admin"
    """A key with either role: listing the pending approvals."""
    ADMIN = "admin"
    """A key with the ``admin`` role: every execution, the dashboard's feed, the metrics."""

    @property
    def roles(self) -> frozenset[str]:
        """The roles of which a key needs one; empty: any valid key will do."""
        return _ROLES.get(self, frozenset())


_ROLES = {
    Access.APPROVER: frozenset({"approver"}),
    Access.APPROVER_OR_ADMIN: frozenset({"approver", "admin"}),
    Access.ADMIN: frozenset({"admin"}),
}


@dataclass(frozen=True)
class Operation:
    """A route's OpenAPI operation, less what its :class:`Access` and method add (security,
    401/429, 403 for another site's page, 415 for a body that is not JSON).

    ``responses`` maps a status to an OpenAPI response; ``schemas`` are the components that
    these name (``#/components/schemas/<name>``) beyond the document's shared ones.
    """

    id: str
    summary: str
    responses: JsonObject
    parameters: Sequence[JsonObject] = ()
    body: JsonObject | None = None
    body_required: bool = True
    body_description: str | None = None
    schemas: JsonObject = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    """OpenAPI's form: ``{name}`` for a parameter."""
    handler: Handler
    access: Access
    operation: Operation
    patterns: Mapping[str, str] = field(default_factory=dict)
    """A regular expression a path parameter must match, by name (any segment without)."""
    held: bool = False
    """The request is held for a transaction's end: with API keys required, it counts
    against its key's ``max_held`` (429 beyond it)."""
    form: bool = False
    """Its body may be an HTML form's (``application/x-www-form-urlencoded``) as well as
    JSON: a route whose credential is in its URL, posted by a page of the daemon's own."""

    @property
    def name(self) -> str:
        """The router's name of the route's resource: its operation's id."""
        return self.operation.id

    def router_path(self) -> str:
        path = self.path
        for name, pattern in self.patterns.items():
            path = path.replace(f"{{{name}}}", f"{{{name}:{pattern}}}")
        return path


ACCESS = web.AppKey("access", dict[AbstractRoute, Access])
FORMS = web.AppKey("form_routes", set[AbstractRoute])
"""The routes that take a form's body (:attr:`Route.form`)."""
ROUTES = web.AppKey("routes", list[Route])
"""The routes the application serves, in the order added."""


class UndeclaredAccessError(RuntimeError):
    pass


def declare_access(app: web.Application) -> None:
    """Keep ``app``'s route and access tables, and refuse to start with a route not in them."""
    app[ACCESS] = {}
    app[FORMS] = set()
    app[ROUTES] = []
    app.on_startup.append(_refuse_undeclared)


def add_routes(app: web.Application, routes: Iterable[Route]) -> None:
    """Add ``routes`` (a GET also answers HEAD) with their access."""
    access = app[ACCESS]
    for route in routes:
        resource = app.router.add_resource(route.router_path(), name=route.name)
        methods = [route.method, "HEAD"] if route.method == "GET" else [route.method]
        handler = within_key_budget(route.handler) if route.held else route.handler
        for method in methods:
            added = resource.add_route(method, handler)
            access[added] = route.access
            if route.form:
                app[FORMS].add(added)
        app[ROUTES].append(route)


def add_static(app: web.Application, prefix: str, directory: Path, access: Access) -> None:
    """Serve the files in ``directory`` under ``prefix``, with ``access`` (files, not API:
    not in :data:`ROUTES`)."""
    table = app[ACCESS]
    for route in app.router.add_static(prefix, directory):
        table[route] = access


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


def url_of(request: web.Request, name: str, **parameters: str) -> str:
    """The path of the route named ``name`` with ``parameters``."""
    return str(request.app.router[name].url_for(**parameters))


async def _refuse_undeclared(app: web.Application) -> None:
    undeclared = [
        f"{route.method} {route.resource.canonical if route.resource else route}"
        for route in app.router.routes()
        if route not in app[ACCESS]
    ]
    if undeclared:
        raise UndeclaredAccessError(f"routes without a declared access: {', '.join(undeclared)}")
