"""The application's middlewares: every error answered as JSON, and API keys checked by
each route's declared :class:`~notifier.app.routes.Access`."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from notifier import answers
from notifier.apikeys import HEADER as API_KEY_HEADER
from notifier.app.routes import ACCESS, Access, Handler
from notifier.app.state import API_KEY_NAME, API_KEYS, SETTINGS

log = logging.getLogger(__name__)


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
async def authentication(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 or 429 unless the route is open, keys are not required, or the request carries
    a valid API key within its rate."""
    if request.match_info.http_exception is not None:
        return await handler(request)  # no such route or method: 404 / 405
    # A route without a declaration cannot be served (the application refuses to start);
    # were one to appear, it would be closed.
    access = request.app[ACCESS].get(request.match_info.route, Access.API_KEY)
    if access is Access.OPEN or not request.app[SETTINGS].current.http.require_api_key:
        return await handler(request)
    verdict = request.app[API_KEYS].check(request.headers.get(API_KEY_HEADER))
    if verdict.status == 401:
        return answers.error(401, f"a valid API key is required in the {API_KEY_HEADER} header")
    if verdict.status == 429:
        return answers.error(
            429,
            f"API key {verdict.key_name!r} is over its rate limit",
            {"Retry-After": str(verdict.retry_after)},
        )
    if verdict.key_name is not None:
        request[API_KEY_NAME] = verdict.key_name
    return await handler(request)
