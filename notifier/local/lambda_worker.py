"""One warm Lambda "container": a process that imports a function's handler once and
answers invocations from its parent, one at a time.

Protocol (one JSON document per line): the parent writes
``{"event": ..., "requestId": ..., "deadline": <epoch seconds>}`` to our stdin and reads
``{"result": ...}`` or ``{"error": {"errorMessage", "errorType", "stackTrace"}}`` from the
file descriptor named by ``--reply-fd``. The handler's own prints go to stderr, which the
parent forwards to its log, as Lambda forwards them to CloudWatch Logs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from notifier.local.lambda_imports import confine


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--code-dir", required=True)
    parser.add_argument("--handler", required=True)
    parser.add_argument("--reply-fd", type=int, required=True)
    args = parser.parse_args()

    replies = os.fdopen(args.reply_fd, "w", buffering=1)
    sys.stdout = sys.stderr
    sys.path.insert(0, args.code_dir)
    confine(Path(args.code_dir))

    module_name, _, function_name = args.handler.rpartition(".")
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
        init_error = None
    except Exception as exc:  # an import error is reported on every invocation, as Lambda does
        handler, init_error = None, error_payload(exc)

    for line in sys.stdin:
        request = json.loads(line)
        if handler is None:
            encoded = json.dumps({"error": init_error})
        else:
            context = LambdaContext(request["requestId"], request["deadline"])
            try:
                encoded = json.dumps({"result": handler(request["event"], context)})
            except Exception as exc:
                encoded = json.dumps({"error": error_payload(exc)})
        replies.write(encoded + "\n")


if __name__ == "__main__":
    main()
