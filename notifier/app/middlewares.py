"""The application's middlewares: a span for each request while tracing is on, every error
answered as JSON, requests from other sites' pages refused while API keys are off, API keys
checked by each route's declared :class:`~notifier.app.routing.Access`, and bodies taken only
as JSON; and the headers that keep every answer out of other sites' frames and sniffing."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import hdrs, web

from notifier.apikeys import HEADER as API_KEY_HEADER
from notifier.app.routing import ACCESS, FORMS, Access, Handler
from notifier.app.state import API_KEY, API_KEY_NAME, API_KEYS, AUTHORIZED, SETTINGS, TRACING
from notifier.loopback import host_name, is_loopback
from notifier.requests import answers

log = logging.getLogger(__name__)

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@web.middleware
async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The request's span (in its client's trace, when it names one), around all the rest."""
    resource = request.match_info.route.resource
    name = f"{request.method} {resource.canonical if resource is not None else request.path}"
    attributes = {"http.request.method": request.method, "url.path": request.path}
    with request.app[TRACING].server_span(name, request.headers, attributes) as span:
        response = await handler(request)
        span.set_attribute("http.response.status_code", response.status)
        return response


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer is JSON with a message, including aiohttp's own (404, 405, 413)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        message = exc.reason
        if exc.status == 413:
            message = f"body larger than {request.app[SETTINGS].current.http.max_body_bytes} bytes"
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return answers.error(exc.status, message, headers=headers)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return answers.error(500, "internal error")


@web.middleware
async def same_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
    """While API keys are off, refuse (403) what a page of another site makes a browser send.

    A browser names the page's origin in ``Origin`` on every cross-origin request but a
    plain navigation or an embedded image (neither of which can read the answer), so one
    that is not this daemon's own (the scheme and ``Host`` it was sent to) is refused, and a
    cross-site form can start nothing. A daemon listening on loopback also answers only to a
    loopback ``Host``: a page whose name was re-pointed at 127.0.0.1 (DNS rebinding) is its
    own origin, but not a loopback name. With keys on, the key is what a foreign page lacks.
    """
    http = request.app[SETTINGS].current.http
    if http.require_api_key:
        return await handler(request)
    if is_loopback(http.host) and not is_loopback(host_name(request.host)):
        return answers.error(
            403, f"this daemon answers to its loopback name only, not to {request.host!r}"
        )
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None and origin.lower() != f"{request.scheme}://{request.host}".lower():
        return answers.error(403, f"a request from another origin ({origin}) is refused")
    return await handler(request)


@web.middleware
async def authentication(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 or 429 unless the route is open, keys are not required, or the request carries
    a valid API key within its rate; a route with an optional key is served either way,
    :data:`~notifier.app.state.AUTHORIZED` saying which."""
    if request.match_info.http_exception is not None:
        return await handler(request)  # no such route or method: 404 / 405
    # A route without a declaration cannot be served (the application refuses to start);
    # were one to appear, it would be closed.
    access = request.app[ACCESS].get(request.match_info.route, Access.API_KEY)
    if access is Access.OPEN:
        return await handler(request)
    if not request.app[SETTINGS].current.http.require_api_key:
        request[AUTHORIZED] = True
        return await handler(request)
    verdict = request.app[API_KEYS].check(request.headers.get(API_KEY_HEADER))
    key = verdict.key if verdict.status == 200 else None
    request[AUTHORIZED] = key is not None
    if key is not None:
        if access.roles and access.roles.isdisjoint(key.roles):
            needs = f"API key {key.name!r} needs the {access.value} role for this"
            return answers.error(403, needs)
        request[API_KEY] = key
        request[API_KEY_NAME] = key.name
    if access is Access.OPTIONAL_KEY or key is not None:
        return await handler(request)
    if verdict.status == 401:
        return answers.error(401, f"a valid API key is required in the {API_KEY_HEADER} header")
    return answers.error(
        429,
        f"API key {verdict.key_name!r} is over its rate limit",
        {"Retry-After": str(verdict.retry_after)},
    )


@web.middleware
async def json_bodies(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request with a body is taken only as ``application/json`` (415 otherwise): no form or
    ``text/plain`` post, which a browser sends cross-site without asking, reaches a handler;
    but for the routes declared to take a form (whose credential is in their URL), which
    take a form's body too."""
    if (
        request.method in BODY_METHODS
        and request.body_exists
        and request.content_type != JSON
        and request.match_info.http_exception is None
        and not (request.content_type == FORM and request.match_info.route in request.app[FORMS])
    ):
        return answers.error(415, f"the body must be JSON, sent as Content-Type: {JSON}")
    return await handler(request)


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every answer, the page included, may be shown in no frame
    and loads nothing but the daemon's own files."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
