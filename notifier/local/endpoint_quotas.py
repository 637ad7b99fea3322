"""Step Functions' API throttling on the local AWS endpoint, and where its quota events are read.

A WSGI middleware in front of moto: each call of a throttled Step Functions operation takes
a token from that operation's bucket, and without one it gets AWS's answer, HTTP 400
``ThrottlingException`` "Rate exceeded", which the AWS SDKs raise (and retry) as such. The
calls moto's own state machines make back to the endpoint (service integrations starting
executions) draw on the same buckets, as they do in AWS. ``GET /_notifier/quotas``, from
loopback only, answers the endpoint's quota event counts as JSON (``{"events": {...}}``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from notifier.local.throttling import THROTTLING_ERROR, QuotaEvents, StepFunctionsThrottle

QUOTAS_PATH = "/_notifier/quotas"
STEP_FUNCTIONS_TARGET = "AWSStepFunctions."
LOOPBACK = ("127.0.0.1", "::1")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class QuotaMiddleware:
    def __init__(
        self, app: WsgiApp, throttle: StepFunctionsThrottle | None, events: QuotaEvents
    ) -> None:
        self._app = app
        self._throttle = throttle
        self._events = events

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == QUOTAS_PATH and environ.get("REQUEST_METHOD") == "GET":
            return self._quota_events(environ, start_response)
        target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
        if self._throttle is not None and target.startswith(STEP_FUNCTIONS_TARGET):
            if not self._throttle.admit(target[len(STEP_FUNCTIONS_TARGET) :]):
                _drain(environ)
                return _json(start_response, "400 Bad Request", THROTTLING_ERROR,
                             "application/x-amz-json-1.0")  # fmt: skip
        return self._app(environ, start_response)

    def _quota_events(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        if environ.get("REMOTE_ADDR") not in LOOPBACK:
            return _json(start_response, "403 Forbidden", {"message": "loopback only"})
        return _json(start_response, "200 OK", {"events": self._events.counts()})


def _json(
    start_response: StartResponse,
    status: str,
    body: dict[str, Any],
    content_type: str = "application/json",
) -> list[bytes]:
    encoded = json.dumps(body).encode()
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(encoded)))])
    return [encoded]


def _drain(environ: dict[str, Any]) -> None:
    """Read the refused request's body, so that its connection can serve the next one."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
