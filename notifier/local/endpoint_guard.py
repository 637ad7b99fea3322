"""The local AWS endpoint's front door, as closed as AWS's.

AWS answers no cross-origin call from a web page to its APIs without the caller's own signed
credentials, and an endpoint on loopback must not be easier to reach than that: any page open
in a browser on the machine can send requests to ``127.0.0.1``, and DNS rebinding lets it
read the answers. So every request to the endpoint must

- carry no ``Origin`` header (browsers add one to every cross-origin call; AWS SDKs never do),
  and the endpoint answers no CORS preflight and adds no CORS header to any answer;
- name a loopback host in ``Host`` (a rebound name is refused before anything runs);
- be signed with SigV4 with the stack's credentials, as every client of the stack is
  (the daemon, the Lambda workers, the bench, the tests).

A refusal is a 403 with an AWS-style JSON error, which SDKs raise as a client error.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from typing import Any

from notifier.local.sigv4 import SignatureRefused, SigV4Verifier
from notifier.loopback import host_name, is_loopback

DENIED = "AccessDeniedException"
StartResponse = Callable[..., Any]
Wsgi = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class ClosedEndpoint:
    """WSGI middleware: ``app`` answers only what passes the checks above."""

    def __init__(self, app: Wsgi, signatures: SigV4Verifier) -> None:
        self._app = app
        self._signatures = signatures

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        host = environ.get("HTTP_HOST", "")
        if "HTTP_ORIGIN" in environ:
            return _refuse(
                start_response, "AccessDeniedException", "Cross-origin calls are refused."
            )
        if not is_loopback(host_name(host)):
            return _refuse(
                start_response, "AccessDeniedException", f"Host {host!r} is not loopback."
            )
        body = _read_body(environ)
        try:
            self._signatures.check(
                environ["REQUEST_METHOD"], _url(environ, host), _headers(environ), body
            )
        except SignatureRefused as refused:
            return _refuse(start_response, "InvalidSignatureException", str(refused))
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))

        def without_cors(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            kept = [(k, v) for k, v in headers if not k.lower().startswith("access-control-")]
            return start_response(status, kept, *exc_info)

        return self._app(environ, without_cors)


def _read_body(environ: dict[str, Any]) -> bytes:
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH") or ""
    if length.isdigit():
        return bytes(stream.read(int(length)))
    if environ.get("wsgi.input_terminated"):  # chunked: werkzeug ends the stream for us
        return bytes(stream.read())
    return b""


def _url(environ: dict[str, Any], host: str) -> str:
    """The URL as the client sent it: its path and query undecoded, as they were signed."""
    target = environ.get("REQUEST_URI") or environ.get("RAW_URI") or environ.get("PATH_INFO", "/")
    if "QUERY_STRING" in environ and "?" not in target and environ["QUERY_STRING"]:
        target += "?" + environ["QUERY_STRING"]
    return f"http://{host}{target}"


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    return headers


def _refuse(start_response: StartResponse, error_type: str, message: str) -> list[bytes]:
    body = json.dumps({"__type": error_type, "message": message}).encode()
    start_response(
        "403 Forbidden",
        [
            ("Content-Type", "application/x-amz-json-1.0"),
            ("Content-Length", str(len(body))),
            ("x-amzn-ErrorType", error_type),
        ],
    )
    return [body]
