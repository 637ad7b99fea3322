"""The AWS calls of a local Lambda worker, carried over the pipe it already has to the endpoint.

A handler's boto3 calls to the local endpoint are real calls: botocore builds, signs and
sends each request and parses the answer, and moto's server application (the same WSGI
application that answers the endpoint's HTTP clients) answers it. Only the transport
changes. Over HTTP every call cost a TCP connection (moto's server closes each one), a
thread, and parsing the HTTP framing on both sides: more CPU than most of the calls
themselves, for a conversation between a process and its own parent. So a worker hands each
request, as botocore prepared it, to the endpoint thread that invoked it, over the
invocation's pipe; that thread runs it through the application and sends back the status,
the headers and the body, which botocore parses as it would an HTTP response.

Over the pipe (after the invocation request, before the invocation's reply), a call is two
messages, ``{"call": {"method", "url", "headers": [[name, value], ...]}}`` and the body's
bytes; its answer is two as well, ``{"status", "headers"}`` and the body.
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders

log = logging.getLogger("notifier.local.lambda")

Answer = tuple[int, list[tuple[str, str]], bytes]
"""An HTTP answer: status, headers, body."""
Call = Callable[[dict[str, Any], bytes], Answer]
"""Answers one call (its ``{"method", "url", "headers"}`` and its body)."""


def send_answer(channel: Connection, answer: Answer) -> None:
    status, headers, body = answer
    channel.send_bytes(json.dumps({"status": status, "headers": headers}).encode())
    channel.send_bytes(body)


class WsgiCaller:
    """Answers calls with a WSGI application, as werkzeug's server (moto's) would over HTTP:
    the same environ, built by the server's own request handler class, and a server error
    for an application that raises."""

    def __init__(self, server: Any) -> None:
        """``server``: the running werkzeug server whose application answers."""
        self._server = server
        self._handler_class = server.RequestHandlerClass

    def __call__(self, call: dict[str, Any], body: bytes) -> Answer:
        from werkzeug.exceptions import InternalServerError

        try:
            return self._run(self._server.app, self._environ(call, body))
        except Exception:
            log.exception("Error on request %s %s", call["method"], call["url"])
            error = InternalServerError()
            return error.code, error.get_headers(), error.get_body().encode()

    def _environ(self, call: dict[str, Any], body: bytes) -> dict[str, Any]:
        url = urlsplit(call["url"])
        headers = http.client.HTTPMessage()
        for name, value in call["headers"]:
            headers[name] = value
        # What http.client adds to every request it sends.
        if "Host" not in headers:
            headers["Host"] = url.netloc
        if "Accept-Encoding" not in headers:
            headers["Accept-Encoding"] = "identity"
        if body and "Content-Length" not in headers:
            headers["Content-Length"] = str(len(body))
        # The server's request handler, given the request without a socket: it makes the
        # environ exactly as for a request that came over HTTP.
        handler = self._handler_class.__new__(self._handler_class)
        handler.server = self._server
        handler.client_address = ("127.0.0.1", 0)
        handler.connection = None
        handler.command = call["method"]
        handler.path = f"{url.path}?{url.query}" if url.query else url.path
        handler.request_version = "HTTP/1.1"
        handler.headers = headers
        handler.rfile = io.BytesIO(body)
        environ: dict[str, Any] = handler.make_environ()
        return environ

    @staticmethod
    def _run(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> Answer:
        started: list[Any] = []
        chunks: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]], _: Any = None) -> Any:
            started[:] = [status, headers]
            return chunks.append

        iterable = app(environ, start_response)
        try:
            chunks.extend(iterable)
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()
        status, headers = started
        return int(status.split(None, 1)[0]), [(k, v) for k, v in headers], b"".join(chunks)


class _Body(io.BytesIO):
    """An answer's body as botocore reads an HTTP response's: ``read`` and ``stream``."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        while chunk := self.read(65536):
            yield chunk


class PipeSender:
    """A botocore ``before-send`` handler, in the worker: requests to ``endpoint_url`` go over
    ``channel``, one at a time (a handler's threads take turns); any other goes over HTTP."""

    def __init__(self, channel: Connection, endpoint_url: str) -> None:
        self._channel = channel
        self._prefix = endpoint_url.rstrip("/") + "/"
        self._lock = threading.Lock()

    def __call__(self, request: Any, **_: Any) -> Any:
        if not (request.url + "/").startswith(self._prefix):
            return None
        call = {
            "method": request.method,
            "url": request.url,
            "headers": [[name, _text(value)] for name, value in request.headers.items()],
        }
        body = _bytes(request.body)
        with self._lock:
            self._channel.send_bytes(json.dumps({"call": call}).encode())
            self._channel.send_bytes(body)
            answer = json.loads(self._channel.recv_bytes())
            content = self._channel.recv_bytes()
        headers = HTTPHeaders()
        for name, value in answer["headers"]:
            headers[name] = value
        return AWSResponse(request.url, answer["status"], headers, _Body(content))

    def install(self) -> None:
        """For boto3's default session and every botocore session made from now on."""
        import boto3
        import botocore.handlers

        botocore.handlers.BUILTIN_HANDLERS.append(("before-send", self))
        if boto3.DEFAULT_SESSION is not None:
            boto3.DEFAULT_SESSION._session.register("before-send", self)


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    return bytes(body.read())  # a file-like body: botocore rewinds it itself for a retry
