"""The routes' executions a page at a time: ListExecutions over each route's state machine,
one after the other, with a page token of the daemon's own that names where it left off."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Unpack

from notifier.aws.errors import AwsError
from notifier.config import RouteSettings

if TYPE_CHECKING:
    from types_aiobotocore_stepfunctions.literals import ExecutionStatusType
    from types_aiobotocore_stepfunctions.type_defs import ListExecutionsInputTypeDef

LIST_LIMIT = 100
"""Executions a listing page has unless asked for fewer or more, up to the next."""
MAX_LIST_LIMIT = 1000
LIST_STATUSES: tuple[ExecutionStatusType, ...] = (
    "RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED", "PENDING_REDRIVE"
)
"""What ListExecutions filters by."""


class ListExecutionsCall(Protocol):
    """ListExecutions, raising :class:`AwsError`."""

    async def __call__(
        self, **params: Unpack[ListExecutionsInputTypeDef]
    ) -> Mapping[str, Any]: ...


class InvalidPageTokenError(ValueError):
    """A ``nextToken`` this daemon did not hand out (or for routes since removed)."""


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    """ListExecutions items, each with the ``route`` it was listed under."""
    next_token: str | None


async def list_page(
    list_executions: ListExecutionsCall,
    configured: Mapping[str, RouteSettings],
    routes: list[str],
    status: ExecutionStatusType | None,
    limit: int,
    token: str | None,
) -> Page:
    """Up to ``limit`` executions of ``routes``' state machines (each machine once, under
    the first of its routes), one route after the other, from where ``token`` left off.

    ``list_executions`` makes a ListExecutions call, raising :class:`AwsError`. The token
    handed back names the route and ListExecutions' own token; raises
    :class:`InvalidPageTokenError` for one that does not fit ``routes``.
    """
    machines: dict[str, str] = {}
    for route in routes:
        machines.setdefault(configured[route].state_machine, route)
    order = list(machines.values())
    index, aws_token = 0, None
    if token is not None:
        route, aws_token = _read_token(token)
        if route not in order:
            raise InvalidPageTokenError("nextToken does not belong to this listing")
        index = order.index(route)
    items: list[dict[str, Any]] = []
    while index < len(order) and len(items) < limit:
        route = order[index]
        parameters: ListExecutionsInputTypeDef = {
            "stateMachineArn": configured[route].state_machine,
            "maxResults": limit - len(items),
        }
        if status:
            parameters["statusFilter"] = status
        if aws_token:
            parameters["nextToken"] = aws_token
        try:
            page = await list_executions(**parameters)
        except AwsError as exc:
            if exc.code == "InvalidToken":
                raise InvalidPageTokenError("nextToken has expired or is invalid") from exc
            raise
        items.extend({**item, "route": route} for item in page.get("executions", []))
        aws_token = page.get("nextToken")
        if not aws_token:
            index += 1
    more = index < len(order)
    return Page(items, _write_token(order[index], aws_token) if more else None)


def _write_token(route: str, aws_token: str | None) -> str:
    raw = json.dumps({"route": route, "token": aws_token}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _read_token(token: str) -> tuple[str, str | None]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        route, aws_token = raw["route"], raw["token"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidPageTokenError("nextToken is not one this daemon handed out") from None
    if not isinstance(route, str) or not isinstance(aws_token, str | None):
        raise InvalidPageTokenError("nextToken is not one this daemon handed out")
    return route, aws_token
