"""Stands in for the Lambda service's execution environment, which moto only offers in Docker.

moto keeps the control plane (functions, their code zips, environment, timeouts); this
bridge replaces the step that runs the code. Each function gets a pool of warm worker
processes (`lambda_worker`), started on demand from the function's own deployed zip, with
the function's environment variables plus the local endpoint, as a Lambda container would
have them. Concurrent invocations use separate workers, so handlers see the same
process-per-invocation isolation as in AWS.

Workers are forked from one server process that imported boto3 once (multiprocessing's
``forkserver``): a burst of invocations that needs new workers costs milliseconds each,
not the half second of CPU a new interpreter takes to import boto3, which on a small
machine had a burst of concurrent workflows spend seconds starting workers.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from notifier.local import lambda_worker
from notifier.local.lambda_calls import Call, send_answer
from notifier.local.settings import LOCAL_CREDENTIAL

log = logging.getLogger("notifier.local.lambda")

WORKERS_PER_FUNCTION = 8
"""Concurrent invocations of one function; more wait for a worker to be free."""


class Worker:
    """One warm process for one version of one function's code."""

    def __init__(
        self,
        context: multiprocessing.context.ForkServerContext,
        code_dir: Path,
        handler: str,
        env: dict[str, str],
        name: str,
        answer: Call | None,
    ) -> None:
        self._answer = answer
        self._channel, worker_channel = context.Pipe()
        self._closing = threading.Lock()
        log_read, log_write = context.Pipe(duplex=False)
        self.process = context.Process(
            target=lambda_worker.serve,
            args=(str(code_dir), handler, env, worker_channel, log_write, answer is not None),
            name=f"lambda {name}",
            daemon=True,
        )
        self.process.start()
        worker_channel.close()
        log_write.close()
        threading.Thread(target=self._forward_logs, args=(log_read, name), daemon=True).start()

    @staticmethod
    def _forward_logs(pipe: Connection, name: str) -> None:
        with open(os.dup(pipe.fileno()), errors="replace") as lines:
            pipe.close()
            for line in lines:
                log.info("[%s] %s", name, line.rstrip())

    def invoke(self, event: Any, timeout: float) -> dict[str, Any] | None:
        """The worker's reply, or None when the invocation timed out or the worker died."""
        request = {
            "event": event,
            "requestId": str(uuid.uuid4()),
            "deadline": time.time() + timeout,
        }
        deadline = time.monotonic() + timeout
        try:
            self._channel.send_bytes(json.dumps(request).encode())
            while True:
                if not self._channel.poll(max(0.0, deadline - time.monotonic())):
                    return None
                message: dict[str, Any] = json.loads(self._channel.recv_bytes())
                if "call" not in message or self._answer is None:
                    return message
                body = self._channel.recv_bytes()
                send_answer(self._channel, self._answer(message["call"], body))
        except (EOFError, OSError):
            return None

    def alive(self) -> bool:
        return self.process.is_alive()

    def close(self) -> None:
        """Kill the process; safe to call from several threads (a pool stopping while an
        invocation of this worker fails)."""
        with self._closing:
            if self._channel.closed:
                return
            if self.alive():
                self.process.kill()
            self.process.join()
            self._channel.close()


class FunctionPool:
    """Warm workers for one function version; grows on demand up to a limit."""

    def __init__(self, factory: Callable[[], Worker]) -> None:
        self._factory = factory
        self._idle: list[Worker] = []
        self._workers: set[Worker] = set()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(WORKERS_PER_FUNCTION)
        self._closed = threading.Event()

    def invoke(self, event: Any, timeout: float) -> dict[str, Any] | None:
        """The worker's reply; None when it timed out or died, or the pool is closed (an
        invocation that waited for a free worker while it closed starts none)."""
        with self._slots:
            worker = self._worker()
            if worker is None:
                return None
            reply = worker.invoke(event, timeout)
            with self._lock:
                if reply is None:
                    self._workers.discard(worker)
                else:
                    self._idle.append(worker)
            if reply is None:
                worker.close()
            return reply

    def _worker(self) -> Worker | None:
        """An idle worker, or a new one; None once the pool is closed."""
        with self._lock:
            if self._closed.is_set():
                return None
            if self._idle:
                return self._idle.pop()
        worker = self._factory()
        with self._lock:
            if not self._closed.is_set():
                self._workers.add(worker)
                return worker
        worker.close()  # closed while it started: close() did not see it
        return None

    def close(self) -> None:
        """Stop every worker, busy ones too (their invocations end), and start none again."""
        with self._lock:
            self._closed.set()
            workers, self._workers, self._idle = self._workers, set(), []
        for worker in workers:
            worker.close()


class LocalLambdaRuntime:
    """Runs deployed Python Lambda functions in local worker processes."""

    def __init__(self, endpoint_url: str, answer: Call | None = None) -> None:
        """``answer``: answers the workers' AWS calls in this process (``lambda_calls``);
        without it they go to ``endpoint_url`` over HTTP."""
        self.endpoint_url = endpoint_url
        self._answer = answer
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(list(lambda_worker.PRELOADED))
        self._code_root = Path(tempfile.mkdtemp(prefix="notifier-lambda-"))
        self._pools: dict[str, FunctionPool] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def start(self) -> None:
        """Start the server that forks workers now, so that it has loaded boto3 by the time
        the first invocation comes (rather than making that one wait)."""
        multiprocessing.forkserver.ensure_running()

    def invoke(self, function: Any, event: Any) -> tuple[str, bool, str]:
        """Invoke a moto ``LambdaFunction``; returns moto's (payload, errored, logs) triple."""
        pool = self._pool_for(function)
        timeout = float(function.timeout or 3)
        reply = pool.invoke(event, timeout) if pool is not None else None
        if reply is None and self._closed.is_set():  # the endpoint is stopping
            error = {"errorMessage": "the local Lambda runtime has stopped", "errorType": "Stopped"}
            return json.dumps(error), True, ""
        if reply is None:
            error = {
                "errorMessage": f"Task timed out after {timeout:.2f} seconds",
                "errorType": "Sandbox.Timedout",
            }
            return json.dumps(error), True, ""
        if "error" in reply:
            return json.dumps(reply["error"]), True, ""
        return json.dumps(reply["result"]), False, ""

    def _pool_for(self, function: Any) -> FunctionPool | None:
        """The function's pool; None once the runtime is closed."""
        digest = hashlib.sha256(function.code_bytes).hexdigest()[:16]
        env_digest = hashlib.sha256(
            json.dumps([function.handler, function.environment_vars], sort_keys=True).encode()
        ).hexdigest()[:8]
        key = f"{function.function_arn}:{digest}:{env_digest}"
        with self._lock:
            if self._closed.is_set():
                return None
            pool = self._pools.get(key)
            if pool is None:
                code_dir = self._unpack(function.code_bytes, digest)
                env = self._environment(function)
                name = function.function_name
                pool = FunctionPool(
                    lambda: Worker(
                        self._context, code_dir, function.handler, env, name, self._answer
                    )
                )
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
        """Stop every worker; invocations from now on fail at once (those queued behind
        EventBridge would otherwise each start a worker against a stopped endpoint), and so
        do those waiting for a free worker."""
        with self._lock:
            self._closed.set()
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
