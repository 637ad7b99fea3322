"""Routes declared with who may call them.

Every route is added with its :class:`Access`, kept in the application's ``ACCESS`` table
that the authentication middleware reads. A route added any other way has no declaration,
and the application refuses to start (:class:`UndeclaredAccessError`): nothing is open by
accident.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Access(enum.Enum):
    """Who may call a route when ``[http] require_api_key`` is on (with keys off, anyone)."""

    OPEN = "open"
    """Anyone: the health checks and the dashboard page."""
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
        return frozenset(self.value.split(" or ")) if self.value in _ROLE_VALUES else frozenset()


_ROLE_VALUES = ("approver", "approver or admin", "admin")


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    access: Access


ACCESS = web.AppKey("access", dict[AbstractRoute, Access])


class UndeclaredAccessError(RuntimeError):
    pass


def declare_access(app: web.Application) -> None:
    """Keep ``app``'s access table, and refuse to start with a route not in it."""
    app[ACCESS] = {}
    app.on_startup.append(_refuse_undeclared)


def add_routes(app: web.Application, routes: Iterable[Route]) -> None:
    """Add ``routes`` (a GET also answers HEAD) with their access."""
    access = app[ACCESS]
    for route in routes:
        resource = app.router.add_resource(route.path)
        methods = [route.method, "HEAD"] if route.method == "GET" else [route.method]
        for method in methods:
            access[resource.add_route(method, route.handler)] = route.access


def add_static(app: web.Application, prefix: str, directory: Path, access: Access) -> None:
    """Serve the files in ``directory`` under ``prefix``, with ``access``."""
    table = app[ACCESS]
    for route in app.router.add_static(prefix, directory):
        table[route] = access


async def _refuse_undeclared(app: web.Application) -> None:
    undeclared = [
        f"{route.method} {route.resource.canonical if route.resource else route}"
        for route in app.router.routes()
        if route not in app[ACCESS]
    ]
    if undeclared:
        raise UndeclaredAccessError(f"routes without a declared access: {', '.join(undeclared)}")
