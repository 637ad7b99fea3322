from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from notifier.logs import (
    QUIET_LIBRARIES,
    ConsoleFormatter,
    JsonFormatter,
    bind_transaction,
    setup_logging,
)


@pytest.fixture(autouse=True)
def logging_put_back() -> Iterator[None]:
    """setup_logging configures the process's root logger: the tests after these would go
    on logging at DEBUG, every line formatted for a handler nobody reads."""
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", *QUIET_LIBRARIES)}
    yield
    for handler in root.handlers[:]:
        if isinstance(handler.formatter, JsonFormatter | ConsoleFormatter):
            root.removeHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().strip().splitlines()


async def test_json_lines_carry_the_request_bound_to_the_task() -> None:
    stream = io.StringIO()
    setup_logging("INFO", stream=stream, json_lines=True)
    log = logging.getLogger("notifier.test")

    async def handle(txn: str) -> None:
        bind_transaction(txn, f"arn:aws:states:::execution:m:{txn}")
        await asyncio.sleep(0)
        log.info("answered %s", txn)

    await asyncio.gather(handle("T1"), handle("T2"))
    log.info("not about a request")
    log.warning("from a source", extra={"txnId": "T3"})
    records = [json.loads(line) for line in lines(stream)]
    by_message = {r["message"]: r for r in records}
    assert by_message["answered T1"]["txnId"] == "T1"
    assert by_message["answered T1"]["executionArn"].endswith(":T1")
    assert by_message["answered T2"]["txnId"] == "T2"
    assert "txnId" not in by_message["not about a request"]
    assert by_message["from a source"]["txnId"] == "T3"
    assert {r["level"] for r in records} == {"INFO", "WARNING"}


def test_console_lines_are_readable() -> None:
    stream = io.StringIO()
    setup_logging("DEBUG", stream=stream, json_lines=False)
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("notifier.test").exception("failed", extra={"txnId": "T9"})
    text = stream.getvalue()
    assert "ERROR notifier.test: failed [txnId=T9]" in text
    assert "ValueError: bad" in text
    assert not text.lstrip().startswith("{")


def test_chatty_libraries_stay_quiet_at_debug() -> None:
    setup_logging("DEBUG", stream=io.StringIO(), json_lines=True)
    assert logging.getLogger("botocore").level == logging.WARNING
    assert logging.getLogger().level == logging.DEBUG
