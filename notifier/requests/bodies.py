"""Request bodies: one JSON object, no deeper than the daemon will pass on, and nothing in it
that could not be written out again as JSON for AWS.

Python's JSON parser recurses per nesting level, so a deep enough body raises
RecursionError rather than a decoding error; and a body that parses may still be too deep
to serialise again further down the call stack. It also takes what JSON (RFC 8259) does not:
``NaN`` and ``Infinity``, numbers too large for a float, and ``\\ud800`` escapes that leave a
lone surrogate no UTF-8 encoder writes; and it refuses integers longer than Python's
4,300-digit limit with a plain ``ValueError``. All of them are the client's mistake: a 400.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any, NoReturn

from aiohttp import hdrs, web

from notifier.config import RouteSettings
from notifier.requests.answers import error as error_answer

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted (the object itself is level 1)."""
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""A ``\\uD800``-``\\uDFFF`` escape: half of a pair, or a lone surrogate."""


class InvalidBodyError(ValueError):
    """What is wrong with a body, in words for the client."""


def parse_object(raw: bytes, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """The JSON object in ``raw``; raises :class:`InvalidBodyError` saying what is wrong."""
    try:
        body = json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except InvalidBodyError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidBodyError(f"body is not JSON: {exc}") from None
    except ValueError:  # int() over sys.get_int_max_str_digits()
        limit = sys.get_int_max_str_digits()
        raise InvalidBodyError(f"body has an integer of more than {limit} digits") from None
    except RecursionError:
        raise InvalidBodyError(f"body is nested deeper than {max_depth} levels") from None
    if not isinstance(body, dict):
        raise InvalidBodyError("body must be a JSON object")
    if depth(body, max_depth + 1) > max_depth:
        raise InvalidBodyError(f"body is nested deeper than {max_depth} levels")
    if _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(body, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise InvalidBodyError("body has a lone UTF-16 surrogate escape") from None
    return body


def _no_constant(name: str) -> NoReturn:
    raise InvalidBodyError(f"body is not JSON: {name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise InvalidBodyError(f"body has a number too large to be a float: {text[:40]}")
    return number


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
