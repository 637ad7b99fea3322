"""One warm Lambda "container": a process that imports a function's handler once and
answers invocations from its parent, one at a time.

Workers are forked from a server process that has already imported boto3 and loaded the
models of the services the stack's functions call (``lambda_preload``), so a new one costs
milliseconds where a fresh interpreter importing boto3 and creating its first clients takes
about half a second of CPU. :func:`serve` then makes the process the function's
own: its environment variables, its code first on ``sys.path``, its handler imported.

Protocol, over ``channel`` (one JSON document per message): the parent sends
``{"event": ..., "requestId": ..., "deadline": <epoch seconds>}`` and receives
``{"result": ...}`` or ``{"error": {"errorMessage", "errorType", "stackTrace"}}``. In
between, with ``calls_over_channel``, the handler's AWS calls to the local endpoint come the
other way (``lambda_calls``). The handler's output (stdout and stderr) goes to the ``log``
pipe, which the parent forwards to its log, as Lambda forwards it to CloudWatch Logs.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from notifier.local.lambda_calls import PipeSender
from notifier.local.lambda_imports import confine

PRELOADED = ("notifier.local.lambda_worker", "notifier.local.lambda_preload")
"""What the server that forks workers imports once (this module, boto3 and its models)."""


class LambdaContext:
    """The subset of the Lambda context object that handlers commonly read."""

    def __init__(self, request_id: str, deadline: float) -> None:
        self.aws_request_id = request_id
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.invoked_function_arn = os.environ.get("NOTIFIER_LOCAL_FUNCTION_ARN", "")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = request_id
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def error_payload(exc: BaseException) -> dict[str, Any]:
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "stackTrace": traceback.format_tb(exc.__traceback__.tb_next if exc.__traceback__ else None),
    }


def serve(
    code_dir: str,
    handler_name: str,
    environment: dict[str, str],
    channel: Connection,
    log: Connection,
    calls_over_channel: bool,
) -> None:
    """Become the function's worker and answer invocations until the parent goes away."""
    # Ctrl-C in the terminal is for the stack, which stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    log.close()
    sys.stdout = sys.stderr
    os.environ.clear()
    os.environ.update(environment)
    sys.path.insert(0, code_dir)
    confine(Path(code_dir))
    if calls_over_channel:
        PipeSender(channel, environment["AWS_ENDPOINT_URL"]).install()

    module_name, _, function_name = handler_name.rpartition(".")
    init_error: dict[str, Any] | None = None
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except Exception as exc:  # an import error is reported on every invocation, as Lambda does
        handler, init_error = None, error_payload(exc)

    while True:
        try:
            request = json.loads(channel.recv_bytes())
        except (EOFError, OSError):
            return
        if handler is None:
            reply: dict[str, Any] = {"error": init_error}
        else:
            context = LambdaContext(request["requestId"], request["deadline"])
            try:
                reply = {"result": handler(request["event"], context)}
            except Exception as exc:
                reply = {"error": error_payload(exc)}
        try:
            encoded = json.dumps(reply)
        except (TypeError, ValueError) as exc:  # a result Lambda could not serialise either
            encoded = json.dumps({"error": error_payload(exc)})
        channel.send_bytes(encoded.encode())
