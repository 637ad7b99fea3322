"""Completion sources: each one is an async context manager feeding the waiter registry.

A source turns whatever it receives into a :class:`~notifier.requests.waiters.Completion` and
calls ``registry.resolve(txn_id, completion)``; the registry keeps the first and ignores the
rest. Sources never raise out of their receive loops: a bad message is logged and dropped.

Each module is named for when it works: :mod:`.mqtt` always (in ``mqtt`` mode), :mod:`.queue`
always (with a queue configured), :mod:`.sweeps_while_down` while MQTT is down (always in
``poll`` mode), :mod:`.safety_net_while_up` while it is up, :mod:`.liveness` after another
path brought what MQTT should have, and :mod:`.describe` whenever one of them asks Step
Functions.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from notifier.requests.waiters import Completion, Status


class InvalidNotificationError(ValueError):
    pass


def parse_notification(payload: bytes, via: str, expected_txn_id: str | None = None) -> Completion:
    """Validate a workflow's completion message (the Notify states' payload).

    ``{"txnId", "finishedAt", "executionArn", "stateMachine", "status", "output" | "error",
    "cause"}``; ``finishedAt`` (ISO 8601) is when the workflow's Notify state was entered.
    A success with ``"fetchOutput": true`` and no output is a pointer: its output was too
    large for the message (``Completion.fetch_output``).
    The txn id is checked against ``expected_txn_id`` (the one the topic names) when given;
    whether it is a transaction anyone waits for is the registry's business.
    """
    try:
        message: Any = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidNotificationError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise InvalidNotificationError("not a JSON object")
    txn_id = message.get("txnId")
    if not isinstance(txn_id, str) or not txn_id:
        raise InvalidNotificationError(f"txnId {txn_id!r} is not a string")
    if expected_txn_id is not None and txn_id != expected_txn_id:
        raise InvalidNotificationError(f"txnId {txn_id} does not match the topic")
    status = Status.parse(message.get("status"))
    if not status.final:
        raise InvalidNotificationError(f"status {message.get('status')!r} is not final")
    arn = message.get("executionArn")
    error, cause = message.get("error"), message.get("cause")
    finished_at = message.get("finishedAt")
    try:
        stop_date = datetime.fromisoformat(finished_at) if isinstance(finished_at, str) else None
    except ValueError:
        stop_date = None
    fetch_output = status is Status.SUCCEEDED and message.get("fetchOutput") is True
    if fetch_output and "output" in message:
        raise InvalidNotificationError("a pointer (fetchOutput) carries no output")
    return Completion(
        status=status,
        via=via,
        execution_arn=arn if isinstance(arn, str) else None,
        output=message.get("output"),
        error=error if isinstance(error, str) else None,
        cause=cause if isinstance(cause, str) else None,
        stop_date=stop_date,
        size=len(payload),
        fetch_output=fetch_output,
    )
