"""Logging: JSON lines for journald and files, readable lines on a terminal.

Every line about a request carries its transaction id and execution ARN: handlers bind them
to the running task with :func:`bind_transaction`, and sources pass them as ``extra``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

TXN_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("txn_id", default=None)
EXECUTION_ARN: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "execution_arn", default=None
)

QUIET_LIBRARIES = ("transitions", "amqtt", "botocore", "aiobotocore", "aiohttp.access")


def bind_transaction(txn_id: str, execution_arn: str | None = None) -> None:
    """Tag every later log line of the current task (and tasks it starts) with the request."""
    TXN_ID.set(txn_id)
    EXECUTION_ARN.set(execution_arn)


def _request_fields(record: logging.LogRecord) -> dict[str, str]:
    fields = {
        "txnId": getattr(record, "txnId", None) or TXN_ID.get(),
        "executionArn": getattr(record, "executionArn", None) or EXECUTION_ARN.get(),
    }
    return {key: value for key, value in fields.items() if value}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request fields, exception."""

    def __init__(self) -> None:
        super().__init__()
        # json.dumps with default= makes an encoder at every call: one, made once.
        self._encode = json.JSONEncoder(default=str).encode

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_request_fields(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return self._encode(line)


class ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        text = super().formatMessage(record)
        fields = _request_fields(record)
        if fields:
            text += " [" + " ".join(f"{key}={value}" for key, value in fields.items()) + "]"
        return text


def setup_logging(level: str, stream: TextIO = sys.stderr, json_lines: bool | None = None) -> None:
    """Configure the root logger; ``json_lines`` defaults to "not a terminal"."""
    if json_lines is None:
        json_lines = not stream.isatty()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_lines else ConsoleFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    set_level(level)


def set_level(level: str) -> None:
    """Set the root level (also on reload); chatty libraries stay at WARNING or above."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
