"""A Lambda worker's AWS calls over its pipe are the calls it would send over HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from multiprocessing import Pipe
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.moto_server.werkzeug_app import MotoRequestHandler
from werkzeug.serving import BaseWSGIServer, make_server

from notifier.local.lambda_calls import PipeSender, WsgiCaller, send_answer
from notifier.local.stack import LocalStack
from tests.local.test_bridges import create_function, invoke
from tests.local.test_workflows import new_id

# What differs between two requests over HTTP too: the client's socket, the streams, the
# signature's time and the SDK's ids of the call.
PER_REQUEST = {
    "REMOTE_PORT",
    "werkzeug.socket",
    "wsgi.input",
    "wsgi.errors",
    "HTTP_AUTHORIZATION",
    "HTTP_X_AMZ_DATE",
    "HTTP_AMZ_SDK_INVOCATION_ID",
    "HTTP_AMZ_SDK_REQUEST",
    "HTTP_USER_AGENT",
}


class RecordingApp:
    """Answers every request with a fixed S3-shaped error or object, recording its environ."""

    def __init__(self) -> None:
        self.environs: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        self.environs.append({**environ, "body": body})
        if environ["PATH_INFO"].endswith("/absent"):
            start_response("404 Not Found", [("Content-Type", "application/xml")])
            return [b"<Error><Code>NoSuchKey</Code><Message>not here</Message></Error>"]
        if environ["PATH_INFO"].endswith("/broken"):
            raise RuntimeError("the application failed")
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("ETag", '"e"')])
        if environ["REQUEST_METHOD"] != "GET":
            return []
        return [b"\x00\xffbinary", b" in two chunks"]


@pytest.fixture
def server() -> Iterator[tuple[BaseWSGIServer, RecordingApp]]:
    app = RecordingApp()
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, app
    server.shutdown()
    thread.join()


def s3_client(endpoint: str) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"total_max_attempts": 1}),
    )


def calls(s3: Any) -> list[Any]:
    """The same calls, and what the client made of each answer."""
    results: list[Any] = [
        s3.put_object(Bucket="b", Key="k_1", Body=b"\x00\x01 data", Metadata={"my_meta": "v"})[
            "ETag"
        ],
        s3.get_object(Bucket="b", Key="with space/é")["Body"].read(),
        s3.head_object(Bucket="b", Key="k")["ContentType"],
    ]
    for key in ("absent", "broken"):
        with pytest.raises(ClientError) as failed:
            s3.get_object(Bucket="b", Key=key)
        results.append(failed.value.response["Error"]["Code"])
    return results


def test_a_call_over_the_pipe_reaches_the_application_as_over_http(
    server: tuple[BaseWSGIServer, RecordingApp],
) -> None:
    wsgi_server, app = server
    endpoint = f"http://127.0.0.1:{wsgi_server.server_address[1]}"
    over_http = calls(s3_client(endpoint))
    http_environs, app.environs = app.environs, []

    parent, child = Pipe()
    caller = WsgiCaller(wsgi_server)
    client = s3_client(endpoint)
    client.meta.events.register("before-send", PipeSender(child, endpoint))
    answered = threading.Event()

    def answer_calls() -> None:
        while not answered.is_set():
            if parent.poll(0.05):
                call = json.loads(parent.recv_bytes())["call"]
                send_answer(parent, caller(call, parent.recv_bytes()))

    answering = threading.Thread(target=answer_calls)
    answering.start()
    try:
        over_pipe = calls(client)
    finally:
        answered.set()
        answering.join()

    assert over_pipe == over_http == [
        '"e"',
        b"\x00\xffbinary in two chunks",
        "application/octet-stream",
        "NoSuchKey",
        "500",
    ]
    assert len(app.environs) == len(http_environs) == 5
    for piped, sent in zip(app.environs, http_environs, strict=True):
        assert {k: v for k, v in piped.items() if k not in PER_REQUEST} == {
            k: v for k, v in sent.items() if k not in PER_REQUEST
        }


def test_requests_elsewhere_are_left_to_http() -> None:
    parent, child = Pipe()
    sender = PipeSender(child, "http://127.0.0.1:4566")
    request = type("Request", (), {"url": "http://127.0.0.1:45661/b/k"})()
    assert sender(request) is None
    assert not parent.poll(0)


CALLING_HANDLER = """
import os
import threading

import boto3
from botocore.exceptions import ClientError


def handler(event, context):
    s3 = boto3.client("s3")
    bucket = event["bucket"]
    data = bytes(range(256)) * 64
    s3.put_object(Bucket=bucket, Key="binary", Body=data)
    same = s3.get_object(Bucket=bucket, Key="binary")["Body"].read() == data
    size = s3.head_object(Bucket=bucket, Key="binary")["ContentLength"]
    try:
        s3.get_object(Bucket=bucket, Key="absent")
        missing = None
    except ClientError as error:
        missing = error.response["Error"]["Code"]
    own_session = boto3.session.Session().client("s3")
    from_own_session = own_session.get_object(Bucket=bucket, Key="binary")["Body"].read() == data
    threads = [
        threading.Thread(target=s3.put_object, kwargs={"Bucket": bucket, "Key": key, "Body": b"x"})
        for key in ("t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="t")["KeyCount"]
    return {
        "same": same,
        "size": size,
        "missing": missing,
        "ownSession": from_own_session,
        "listed": listed,
    }
"""


async def test_a_handler_s_calls_are_answered_by_the_endpoint(local_stack: LocalStack) -> None:
    bucket = new_id("calls")
    async with local_stack.aws().client("s3") as s3:
        await s3.create_bucket(Bucket=bucket)
    name = await create_function(local_stack, "calls", timeout=30, handler=CALLING_HANDLER)
    payload, error = await invoke(local_stack, name, {"bucket": bucket})
    assert error is None, payload
    assert payload == {
        "same": True,
        "size": 256 * 64,
        "missing": "NoSuchKey",
        "ownSession": True,
        "listed": 8,
    }
    async with local_stack.aws().client("s3") as s3:
        stored = await s3.get_object(Bucket=bucket, Key="binary")
        assert await stored["Body"].read() == bytes(range(256)) * 64
