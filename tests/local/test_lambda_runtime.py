"""The local Lambda runtime's stop: no invocation outlives it, busy or waiting for a worker."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest

from notifier.local.lambda_runtime import WORKERS_PER_FUNCTION, LocalLambdaRuntime
from tests.support.eventually import EVENTUALLY, eventually

HANDLER = """
import time

def handler(event, context):
    print("sleeping", flush=True)
    time.sleep(event["sleep"])
    return "slept"
"""


def code_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", HANDLER)
    return buffer.getvalue()


class SleepingFunction:
    """A moto ``LambdaFunction`` as the runtime reads it."""

    function_name = "sleeper"
    function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
    region = "us-east-1"
    handler = "app.handler"
    memory_size = 128
    timeout = 900
    environment_vars: dict[str, str] = {}
    code_bytes = code_zip()


async def test_closing_ends_busy_invocations_and_those_waiting_for_a_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every worker busy and more invocations waiting for one, as when a burst of events
    meets a stopping stack: all end at once, none starts a worker after the stop."""
    caplog.set_level(logging.INFO, logger="notifier.local.lambda")
    runtime = LocalLambdaRuntime("http://127.0.0.1:9")  # the handler calls nothing
    runtime.start()
    callers = ThreadPoolExecutor(WORKERS_PER_FUNCTION + 2)
    try:
        invocations = [
            asyncio.wrap_future(callers.submit(runtime.invoke, SleepingFunction(), {"sleep": 900}))
            for _ in range(WORKERS_PER_FUNCTION + 2)
        ]
        await eventually(lambda: caplog.text.count("[sleeper] sleeping") == WORKERS_PER_FUNCTION)
        assert not any(invocation.done() for invocation in invocations)
        runtime.close()
        async with asyncio.timeout(EVENTUALLY):
            answers = await asyncio.gather(*invocations)
    finally:
        runtime.close()
        callers.shutdown(wait=False, cancel_futures=True)
    for payload, errored, _ in answers:
        assert errored
        assert json.loads(payload)["errorType"] == "Stopped"
    assert caplog.text.count("[sleeper] sleeping") == WORKERS_PER_FUNCTION
