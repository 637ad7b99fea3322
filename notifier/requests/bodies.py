"""Request bodies: one JSON object, no deeper than the daemon will pass on.

Python's JSON parser recurses per nesting level, so a deep enough body raises
RecursionError rather than a decoding error; and a body that parses may still be too deep
to serialise again further down the call stack. Both are the client's mistake: a 400.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import hdrs, web

from notifier.config import RouteSettings
from notifier.requests.answers import error as error_answer

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted (the object itself is level 1)."""


class InvalidBodyError(ValueError):
    """What is wrong with a body, in words for the client."""


def parse_object(raw: bytes, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """The JSON object in ``raw``; raises :class:`InvalidBodyError` saying what is wrong."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidBodyError(f"body is not JSON: {exc}") from None
    except RecursionError:
        raise InvalidBodyError(f"body is nested deeper than {max_depth} levels") from None
    if not isinstance(body, dict):
        raise InvalidBodyError("body must be a JSON object")
    if depth(body, max_depth + 1) > max_depth:
        raise InvalidBodyError(f"body is nested deeper than {max_depth} levels")
    return body


def depth(value: Any, limit: int) -> int:
    """How deeply arrays and objects nest in ``value`` (0 for a scalar), counted without
    recursion and no further than ``limit``."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest >= limit:
            return deepest
        pending.extend((child, level + 1) for child in children)
    return deepest


async def read_json_object(request: web.Request, limit: int) -> dict[str, Any] | web.Response:
    """The request's JSON object body, or the 400/413 answer saying what is wrong with it."""
    if request.content_length is not None and request.content_length > limit:
        return error_answer(413, f"body larger than {limit} bytes")
    chunks, size = [], 0
    # Read here rather than by aiohttp, whose own limit is fixed when the app is made.
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            return error_answer(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
    try:
        return parse_object(b"".join(chunks))
    except InvalidBodyError as exc:
        return error_answer(400, str(exc))


async def read_start_body(
    request: web.Request, route: RouteSettings, limit: int
) -> dict[str, Any] | web.Response:
    """A start's body: the JSON object sent, or the route's ``default_input`` for an empty
    body sent without a ``Content-Type``."""
    if not request.body_exists and hdrs.CONTENT_TYPE not in request.headers:
        if route.default_input is not None:
            return dict(route.default_input)
        return error_answer(
            400,
            "the body is empty and this route has no default_input: send a JSON object, as "
            "Content-Type: application/json",
        )
    return await read_json_object(request, limit)
