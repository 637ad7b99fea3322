"""An execution's input: the request's body (or, for a sidecar route, where it is stored)
with what the daemon adds for every instance to read, within Step Functions' size limit, and
what a described execution's input tells of those additions."""

from __future__ import annotations

import json
from typing import Any

from notifier.tracing import TRACE_CONTEXT_KEY

MAX_INPUT_BYTES = 262_144
"""Step Functions' limit on an execution's input (UTF-8)."""
STARTED_BY = "startedBy"
"""The field of an execution's input naming the API key that started it."""


class InputTooLargeError(ValueError):
    """An execution input larger than Step Functions accepts."""


def input_for(
    body: dict[str, Any], txn_id: str, subtopic: str, owner: str | None, *, sidecar: bool
) -> dict[str, Any]:
    """The body (for a ``sidecar`` route, ``processData``: the transaction id its process
    data is stored under) with the subtopic to publish the completion to and the API key
    that started it (``startedBy``)."""
    added: dict[str, Any] = {"subtopic": subtopic}
    if owner is not None:
        added[STARTED_BY] = owner
    if sidecar:
        return {"processData": txn_id, **added}
    return {**body, **added}


def encoded(execution_input: dict[str, Any]) -> str:
    """``execution_input`` as JSON, or :class:`InputTooLargeError` when Step Functions would
    refuse it."""
    text = json.dumps(execution_input)
    size = len(text)  # bytes too: ASCII, as json.dumps escapes the rest
    if size > MAX_INPUT_BYTES:
        raise InputTooLargeError(
            f"the execution input would be {size} bytes; Step Functions accepts at most "
            f"{MAX_INPUT_BYTES}"
        )
    return text


def as_given(execution_input: dict[str, Any]) -> dict[str, Any]:
    """An execution's input without what the daemon adds to a request's body."""
    return {
        key: value
        for key, value in execution_input.items()
        if key not in ("subtopic", STARTED_BY, TRACE_CONTEXT_KEY)
    }


def started_by(description: dict[str, Any]) -> str | None:
    """The name of the API key that started a described execution (its input's
    ``startedBy``); None if none did (keys off, or started by something else)."""
    try:
        execution_input = json.loads(description.get("input") or "{}")
    except json.JSONDecodeError:
        return None
    owner = execution_input.get(STARTED_BY) if isinstance(execution_input, dict) else None
    return owner if isinstance(owner, str) else None
