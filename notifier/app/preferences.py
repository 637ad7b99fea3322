"""``Prefer: wait=N`` (RFC 7240): how long a client asks for its request to be held.

The pattern is written for both Python and ECMA-262 (the OpenAPI document states it as the
header's ``pattern``): preference names are case-insensitive, and HTTP's optional white space
is spaces and tabs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

PREFER_WAIT_PATTERN = r'(?:^|[,; \t])[Ww][Aa][Ii][Tt][ \t]*=[ \t]*"?([0-9]+(?:\.[0-9]+)?)"?'
_PREFER_WAIT = re.compile(PREFER_WAIT_PATTERN)


def preferred_wait(
    prefer_headers: Iterable[str], default: float, cap: float
) -> tuple[float, str | None]:
    """Hold time from ``Prefer: wait=N``, capped, and the ``Preference-Applied`` it gets
    (None without one); unparsable preferences are ignored."""
    for header in prefer_headers:
        match = _PREFER_WAIT.search(header)
        if match:
            wait = min(float(match.group(1)), cap)
            return wait, f"wait={wait:g}"
    return default, None
