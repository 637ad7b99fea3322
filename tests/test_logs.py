from __future__ import annotations

import asyncio
import io
import json
import logging

from notifier.logs import bind_transaction, setup_logging


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
