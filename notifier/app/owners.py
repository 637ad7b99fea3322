"""Whose a transaction is. With API keys required, the key a request comes with owns what it
starts: the owner's tag is in the transaction id (the execution's name) and its name in the
execution's input (``startedBy``), so every instance can tell. A key sees and acts on its
own transactions only, unless it is an ``admin``; another key's is answered exactly as one
that does not exist (404), and an id made for another key is refused before anything is
looked up."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from notifier.app.state import API_KEY, API_KEY_NAME, SETTINGS
from notifier.requests import answers
from notifier.requests.execution_input import started_by
from notifier.requests.ids import made_for


def owner(request: web.Request) -> str | None:
    """The API key a request acts for, when keys are required: it owns the transactions the
    request starts, and idempotency keys are its own."""
    if not request.app[SETTINGS].current.http.require_api_key:
        return None
    return request.get(API_KEY_NAME)


def sees_every_transaction(request: web.Request) -> bool:
    """With keys off, or with an ``admin`` key; any other key sees its own only."""
    key = request.get(API_KEY)
    return owner(request) is None or (key is not None and key.admin)


def may_name(request: web.Request, txn_id: str) -> bool:
    """Whether the request may ask about ``txn_id`` at all: not if the id was made for
    another key."""
    own = owner(request)
    return sees_every_transaction(request) or (own is not None and made_for(txn_id, own))


def may_see(request: web.Request, started_by_key: str | None) -> bool:
    """Whether the request may see a transaction started by the key named
    ``started_by_key``."""
    return sees_every_transaction(request) or (
        started_by_key is not None and started_by_key == owner(request)
    )


def may_see_described(request: web.Request, description: dict[str, Any]) -> bool:
    """:func:`may_see` for an execution known from DescribeExecution."""
    return may_see(request, started_by(description))


def no_transaction(txn_id: str) -> web.Response:
    """What a key is told of a transaction that does not exist, or is another key's."""
    return answers.error(404, f"no transaction {txn_id!r}")
