"""The JSON answers the daemon gives, from a transaction and how it ended."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from aiohttp import web

from notifier.aws.errors import RATE_LIMITED, AwsError
from notifier.requests.waiters import Completion, Status, Transaction, utcnow

STATUS_CODES = {
    Status.SUCCEEDED: 200,
    Status.FAILED: 502,
    Status.TIMED_OUT: 504,
    Status.ABORTED: 409,
}


def timestamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000, 1)


# json.dumps with default= makes an encoder at every call: one, made once (it keeps nothing
# between calls).
_encode = json.JSONEncoder(default=str).encode


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers, dumps=_encode)


def error(
    code: int, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    return _json(code, {"message": message, **extra}, headers)


def aws_error(exc: AwsError, retry_after: int) -> web.Response:
    if exc.throttled:
        who = (
            "this instance's share of Step Functions reads holds"
            if exc.code == RATE_LIMITED
            else "AWS is throttling"
        )
        return error(
            503,
            f"{who} {exc.operation}; retry later",
            headers={"Retry-After": str(retry_after)},
            awsErrorCode=exc.code,
        )
    return error(502, f"{exc.operation} failed: {exc.message}", awsErrorCode=exc.code)


def final(
    txn: Transaction,
    completion: Completion,
    *,
    received_at: datetime,
    process_data: Any = None,
    process_data_error: str | None = None,
    sidecar: bool = False,
    headers: dict[str, str] | None = None,
) -> web.Response:
    answered_at = utcnow()
    timings: dict[str, Any] = {
        "receivedAt": timestamp(received_at),
        "startedAt": timestamp(txn.started_at) if txn.started_at else None,
        "notifiedAt": timestamp(completion.notified_at),
        "answeredAt": timestamp(answered_at),
        "durationsMs": {
            "startedToNotified": _ms(txn.started_at, completion.notified_at),
            "notifiedToAnswered": _ms(completion.notified_at, answered_at),
            "receivedToAnswered": _ms(received_at, answered_at),
        },
    }
    if completion.stop_date is not None:
        # The workflow's clock (AWS's), not ours; on one machine, as locally, they agree.
        timings["stoppedAt"] = timestamp(completion.stop_date)
        timings["durationsMs"]["stoppedToAnswered"] = _ms(completion.stop_date, answered_at)
    body: dict[str, Any] = {
        "transactionId": txn.txn_id,
        "executionArn": completion.execution_arn or txn.execution_arn,
        "status": str(completion.status),
        "output": completion.output if completion.status is Status.SUCCEEDED else None,
    }
    if sidecar:
        body["processData"] = process_data
        if process_data_error:
            body["processDataError"] = process_data_error
    if completion.status is not Status.SUCCEEDED:
        body["error"] = completion.error
        body["cause"] = completion.cause
    body["completedVia"] = completion.via
    body["timings"] = timings
    return _json(STATUS_CODES[completion.status], body, headers)


def running(
    txn: Transaction,
    *,
    location: str,
    received_at: datetime,
    retry_after: int,
    headers: dict[str, str] | None = None,
    message: str = "still running",
) -> web.Response:
    body = {
        "transactionId": txn.txn_id,
        "executionArn": txn.execution_arn,
        "status": str(Status.PENDING_REDRIVE if txn.pending_redrive else Status.RUNNING),
        "location": location,
        "message": f"{message}; GET the location to wait for the result",
        "timings": {
            "receivedAt": timestamp(received_at),
            "startedAt": timestamp(txn.started_at) if txn.started_at else None,
            "answeredAt": timestamp(utcnow()),
        },
    }
    return _json(
        202,
        body,
        {**(headers or {}), "Location": location, "Retry-After": str(retry_after)},
    )
