"""Stands in for the Lambda service's execution environment, which moto only offers in Docker.

moto keeps the control plane (functions, their code zips, environment, timeouts); this
bridge replaces the step that runs the code. Each function gets a pool of warm worker
processes (`lambda_worker`), started on demand from the function's own deployed zip, with
the function's environment variables plus the local endpoint, as a Lambda container would
have them. Concurrent invocations use separate workers, so handlers see the same
process-per-invocation isolation as in AWS.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import subprocess  # nosec B404  # starts the local Lambda workers, own code only
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from notifier.local.settings import LOCAL_CREDENTIAL

log = logging.getLogger("notifier.local.lambda")

MAX_WORKERS_PER_FUNCTION = 16


class Worker:
    """One warm process for one version of one function's code."""

    def __init__(self, code_dir: Path, handler: str, env: dict[str, str], name: str) -> None:
        reply_read, reply_write = os.pipe()
        self.process = subprocess.Popen(  # nosec B603  # this interpreter, fixed arguments
            [
                sys.executable,
                "-m",
                "notifier.local.lambda_worker",
                "--code-dir",
                str(code_dir),
                "--handler",
                handler,
                "--reply-fd",
                str(reply_write),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(reply_write,),
            env=env,
            text=True,
        )
        os.close(reply_write)
        self.replies = os.fdopen(reply_read, "r")
        threading.Thread(target=self._forward_logs, args=(name,), daemon=True).start()

    def _forward_logs(self, name: str) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            log.info("[%s] %s", name, line.rstrip())

    def invoke(self, event: Any, timeout: float) -> dict[str, Any] | None:
        """The worker's reply, or None when the invocation timed out or the worker died."""
        assert self.process.stdin is not None
        request = {
            "event": event,
            "requestId": str(uuid.uuid4()),
            "deadline": time.time() + timeout,
        }
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            return None
        reply: list[str] = []
        reader = threading.Thread(target=lambda: reply.append(self.replies.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not reply or not reply[0]:
            return None
        result: dict[str, Any] = json.loads(reply[0])
        return result

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait()
        self.replies.close()


class FunctionPool:
    """Warm workers for one function version; grows on demand up to a limit."""

    def __init__(self, factory: Callable[[], Worker]) -> None:
        self._factory = factory
        self._idle: list[Worker] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_WORKERS_PER_FUNCTION)

    def invoke(self, event: Any, timeout: float) -> dict[str, Any] | None:
        with self._slots:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            if worker is None:
                worker = self._factory()
            reply = worker.invoke(event, timeout)
            if reply is None:
                worker.close()
            else:
                with self._lock:
                    self._idle.append(worker)
            return reply

    def close(self) -> None:
        with self._lock:
            workers, self._idle = self._idle, []
        for worker in workers:
            worker.close()


class LocalLambdaRuntime:
    """Runs deployed Python Lambda functions in local worker processes."""

    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url
        self._code_root = Path(tempfile.mkdtemp(prefix="notifier-lambda-"))
        self._pools: dict[str, FunctionPool] = {}
        self._lock = threading.Lock()

    def invoke(self, function: Any, event: Any) -> tuple[str, bool, str]:
        """Invoke a moto ``LambdaFunction``; returns moto's (payload, errored, logs) triple."""
        pool = self._pool_for(function)
        timeout = float(function.timeout or 3)
        reply = pool.invoke(event, timeout)
        if reply is None:
            error = {
                "errorMessage": f"Task timed out after {timeout:.2f} seconds",
                "errorType": "Sandbox.Timedout",
            }
            return json.dumps(error), True, ""
        if "error" in reply:
            return json.dumps(reply["error"]), True, ""
        return json.dumps(reply["result"]), False, ""

    def _pool_for(self, function: Any) -> FunctionPool:
        digest = hashlib.sha256(function.code_bytes).hexdigest()[:16]
        env_digest = hashlib.sha256(
            json.dumps([function.handler, function.environment_vars], sort_keys=True).encode()
        ).hexdigest()[:8]
        key = f"{function.function_arn}:{digest}:{env_digest}"
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                code_dir = self._unpack(function.code_bytes, digest)
                env = self._environment(function)
                name = function.function_name
                pool = FunctionPool(lambda: Worker(code_dir, function.handler, env, name))
                self._pools[key] = pool
            return pool

    def _unpack(self, code_bytes: bytes, digest: str) -> Path:
        code_dir = self._code_root / digest
        if not code_dir.exists():
            with zipfile.ZipFile(io.BytesIO(code_bytes)) as archive:
                archive.extractall(code_dir)
        return code_dir

    def _environment(self, function: Any) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AWS_", "MOTO_", "NOTIFIER_"))
        }
        env.update(
            {
                "AWS_ENDPOINT_URL": self.endpoint_url,
                "AWS_ACCESS_KEY_ID": LOCAL_CREDENTIAL,
                "AWS_SECRET_ACCESS_KEY": LOCAL_CREDENTIAL,
                "AWS_REGION": function.region,
                "AWS_DEFAULT_REGION": function.region,
                "AWS_LAMBDA_FUNCTION_NAME": function.function_name,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_size),
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "NOTIFIER_LOCAL_FUNCTION_ARN": function.function_arn,
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update({key: str(value) for key, value in function.environment_vars.items()})
        return env

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


def install(runtime: LocalLambdaRuntime) -> None:
    """Route every moto Lambda invocation (API, SFN task, SNS, EventBridge) to ``runtime``."""
    from moto.awslambda.models import LambdaFunction

    def invoke_locally(function: Any, event: Any = None) -> tuple[str, bool, str]:
        payload = json.loads(event) if isinstance(event, str | bytes) else event
        return runtime.invoke(function, payload if payload is not None else {})

    LambdaFunction._invoke_lambda = invoke_locally  # type: ignore[method-assign,assignment]  # moto patched
