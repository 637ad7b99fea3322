"""``Prefer`` (RFC 7240): how long a client asks for its request to be held (``wait=N``), and
whether it wants an answer at once with the transaction's location (``respond-async``).

With ``respond-async`` alone the request is answered 202 as soon as its execution started;
with ``respond-async`` and ``wait=N``, after up to N seconds as with ``wait=N`` alone (the
wait bounds how long the client will wait for the processing, RFC 7240 4.3).

The patterns are written for both Python and ECMA-262 (the OpenAPI document states them as
the header's ``pattern``): preference names are case-insensitive, and HTTP's optional white
space is spaces and tabs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

PREFER_WAIT_PATTERN = r'(?:^|[,; \t])[Ww][Aa][Ii][Tt][ \t]*=[ \t]*"?([0-9]+(?:\.[0-9]+)?)"?'
RESPOND_ASYNC_PATTERN = (
    r"(?:^|[, \t])[Rr][Ee][Ss][Pp][Oo][Nn][Dd]-[Aa][Ss][Yy][Nn][Cc](?:$|[,; \t])"
)
PREFER_PATTERN = f"{PREFER_WAIT_PATTERN}|{RESPOND_ASYNC_PATTERN}"
_PREFER_WAIT = re.compile(PREFER_WAIT_PATTERN)
_RESPOND_ASYNC = re.compile(RESPOND_ASYNC_PATTERN)


@dataclass(frozen=True)
class Preferences:
    wait: float
    """Seconds to hold the request."""
    respond_async: bool
    applied: str | None
    """The ``Preference-Applied`` header's value; None when no preference was applied."""


def preferences(prefer_headers: Iterable[str], default: float, cap: float) -> Preferences:
    """What the ``Prefer`` headers ask for: ``wait=N`` capped, ``respond-async``;
    unparsable preferences are ignored."""
    wait: float | None = None
    respond_async = False
    for header in prefer_headers:
        match = _PREFER_WAIT.search(header)
        if match and wait is None:
            wait = min(float(match.group(1)), cap)
        respond_async = respond_async or _RESPOND_ASYNC.search(header) is not None
    applied = [f"wait={wait:g}"] if wait is not None else []
    if respond_async:
        applied.insert(0, "respond-async")
    held = wait if wait is not None else 0.0 if respond_async else default
    return Preferences(held, respond_async, ", ".join(applied) or None)
