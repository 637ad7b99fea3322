"""The fast path of PutObject and StartExecution: the same requests as botocore's, and every
failure made and reported by the client itself, against the local endpoint (moto) and small
servers that answer what AWS answers when it throttles."""

from __future__ import annotations

import base64
import io
import json
import logging
import secrets
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiobotocore
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from aiohttp import web
from botocore import UNSIGNED, xform_name
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, ParamValidationError, SSLError

from notifier.aws import fast_calls
from notifier.aws.clients import AwsClients
from notifier.aws.errors import AwsError
from notifier.aws.fast_calls import FastCall
from notifier.aws.fast_operations import PutObject, StartExecution
from notifier.config import AwsSettings, RouteSettings
from notifier.local.stack import LocalStack
from notifier.requests.executions import Executions
from notifier.requests.idempotency import IdempotencyConflictError, fingerprint
from tests.support.clocks import HeldClock
from tests.support.tls import loopback_tls

ACCOUNT = "123456789012"
JSON_1_0 = "application/x-amz-json-1.0"
HELLO_INPUT = '{"subtopic": "fast-calls-test"}'


class Counted:
    """The operations counted, as the daemon's metrics count them."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, operation: str) -> None:
        self.calls.append(operation)


def clients(aws: AwsSettings, counted: Counted) -> AwsClients:
    return AwsClients(aws, on_call=counted)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@asynccontextmanager
async def fast_calls_of(aws: AwsClients) -> AsyncIterator[tuple[PutObject, StartExecution]]:
    """PutObject and StartExecution made fast, each with a client of its own."""
    async with (
        aws.client("s3") as s3,
        aws.client("stepfunctions") as sfn,
        aws.fast(s3, PutObject) as put,
        aws.fast(sfn, StartExecution) as start,
    ):
        yield put, start


def fast_path_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What the fast path logged (not the session's daemons, which log as they please)."""
    return [record for record in caplog.records if record.name == fast_calls.log.name]


# ------------------------------------------------------------------ against the local endpoint


async def test_put_object_stores_what_the_client_would(local_stack: LocalStack) -> None:
    counted = Counted()
    aws = clients(local_stack.aws_settings, counted)
    bucket = local_stack.outputs["ProcessDataBucketName"]
    body = json.dumps({"foo": "foo val", "n": 1}).encode()
    async with aws.client("s3") as s3, aws.fast(s3, PutObject) as put:
        key = f"process data/{unique('fast')} \u00fc+~.json"  # percent-encoded in the path
        answer = await put(
            Bucket=bucket,
            Key=key,
            Body=body,
            ContentType="application/json",
            ServerSideEncryption="AES256",
            Metadata={"notifier-route": "p1"},
        )
        stored = await s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        async with stored["Body"] as stream:
            assert await stream.read() == body
    assert (put.made, put.handed_over) == (1, 0)
    assert answer["ETag"] == stored["ETag"]
    assert stored["ContentType"] == "application/json"
    assert stored["ServerSideEncryption"] == "AES256"
    assert stored["Metadata"] == {"notifier-route": "p1"}
    crc = zlib.crc32(body).to_bytes(4, "big")
    assert stored["ChecksumCRC32"] == base64.b64encode(crc).decode()
    assert counted.calls == ["PutObject", "GetObject"]


async def test_start_execution_starts_it(local_stack: LocalStack) -> None:
    counted = Counted()
    aws = clients(local_stack.aws_settings, counted)
    machine = local_stack.outputs["HelloStateMachineArn"]
    async with aws.client("stepfunctions") as sfn, aws.fast(sfn, StartExecution) as start:
        name = unique("fast")
        answer = await start(stateMachineArn=machine, name=name, input=HELLO_INPUT)
        described = await sfn.describe_execution(executionArn=answer["executionArn"])
    assert (start.made, start.handed_over) == (1, 0)
    assert answer["executionArn"].endswith(f":execution:notifier-local-Hello:{name}")
    assert isinstance(answer["startDate"], datetime) and answer["startDate"].tzinfo is not None
    assert (described["name"], described["input"]) == (name, HELLO_INPUT)
    assert counted.calls == ["StartExecution", "DescribeExecution"]


@pytest.mark.parametrize(
    ("operation", "code"),
    [
        ("put-missing-bucket", "NoSuchBucket"),
        ("start-missing-machine", "StateMachineDoesNotExist"),
        ("start-same-name-other-input", "ExecutionAlreadyExists"),
    ],
)
async def test_errors_are_raised_by_the_client(
    local_stack: LocalStack, operation: str, code: str
) -> None:
    counted = Counted()
    aws = clients(local_stack.aws_settings, counted)
    machine = local_stack.outputs["HelloStateMachineArn"]
    async with fast_calls_of(aws) as (put, start):
        name = unique("fast")
        if operation == "put-missing-bucket":
            call: FastCall = put
            params: dict[str, Any] = {"Bucket": unique("missing"), "Key": name, "Body": b"{}"}
        elif operation == "start-missing-machine":
            call = start
            missing = machine.replace("notifier-local-Hello", "notifier-local-Missing")
            params = {"stateMachineArn": missing, "name": name, "input": "{}"}
        else:
            await start(stateMachineArn=machine, name=name, input=HELLO_INPUT)
            call, params = start, {"stateMachineArn": machine, "name": name, "input": "{}"}
        counted.calls.clear()
        with pytest.raises(ClientError) as raised:
            await call(**params)
    assert raised.value.response["Error"]["Code"] == code
    assert AwsError.wrap(call.operation, raised.value).code == code
    assert call.handed_over == 1
    assert counted.calls == [call.operation]  # counted once, by the client's own hook


async def test_a_refusal_the_client_meets_too_leaves_the_next_calls_fast(
    local_stack: LocalStack,
) -> None:
    """AWS refusing a call (a bucket missing, an execution's name taken) says nothing about
    AWS: the calls after it go fast, as an idempotent retry's would after its 409 or 412."""
    aws = local_stack.aws()
    bucket = local_stack.outputs["ProcessDataBucketName"]
    machine = local_stack.outputs["HelloStateMachineArn"]
    async with fast_calls_of(aws) as (put, start):
        with pytest.raises(ClientError):
            await put(Bucket=unique("missing"), Key="k", Body=b"{}")
        await put(Bucket=bucket, Key=unique("fast"), Body=b"{}")
        name = unique("fast")
        await start(stateMachineArn=machine, name=name, input=HELLO_INPUT)
        with pytest.raises(ClientError) as taken:
            await start(stateMachineArn=machine, name=name, input="{}")
        await start(stateMachineArn=machine, name=unique("fast"), input=HELLO_INPUT)
    assert taken.value.response["Error"]["Code"] == "ExecutionAlreadyExists"
    assert (put.made, put.handed_over) == (1, 1)
    assert (start.made, start.handed_over) == (2, 1)


async def test_without_the_internals_it_uses_it_is_off_and_says_so(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    counted = Counted()
    aws = clients(local_stack.aws_settings, counted)
    bucket = local_stack.outputs["ProcessDataBucketName"]
    async with aws.client("s3") as s3:
        for cls in type(s3).__mro__:  # as if a version of aiobotocore had it no more
            if "_resolve_endpoint_ruleset" in vars(cls):
                monkeypatch.delattr(cls, "_resolve_endpoint_ruleset")
        with caplog.at_level("WARNING", logger="notifier.aws.fast_calls"):
            put = aws.fast(s3, PutObject)
        assert not put.enabled
        assert [r.getMessage() for r in fast_path_records(caplog)] == [
            "PutObject: the fast path is off, the AWS SDK makes every call: aiobotocore "
            f"{aiobotocore.__version__}'s client has no _resolve_endpoint_ruleset"
        ]
        monkeypatch.undo()  # the client itself needs it
        await put(Bucket=bucket, Key=unique("fast"), Body=b"{}")
    assert (put.made, put.handed_over) == (0, 1)
    assert counted.calls == ["PutObject"]


async def test_an_internal_failing_turns_it_off_once_and_the_client_makes_the_calls(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    counted = Counted()
    aws = clients(local_stack.aws_settings, counted)
    bucket = local_stack.outputs["ProcessDataBucketName"]
    async with aws.client("s3") as s3, aws.fast(s3, PutObject) as put:

        async def changed(*args: Any, **kwargs: Any) -> Any:
            raise TypeError("a changed signature")

        # The fast path resolves endpoints through the client's internals; the client's own
        # calls do too, so only the fast path's way to them is broken here.
        monkeypatch.setattr(put, "_resolve_target", changed)
        keys = [unique("fast") for _ in range(3)]
        with caplog.at_level("WARNING", logger="notifier.aws.fast_calls"):
            for key in keys:
                await put(Bucket=bucket, Key=key, Body=b"{}")
        for key in keys:
            assert (await s3.head_object(Bucket=bucket, Key=key))["ContentLength"] == 2
    assert not put.enabled
    assert (put.made, put.handed_over) == (0, 3)
    assert counted.calls == ["PutObject"] * 3 + ["HeadObject"] * 3
    [warning] = fast_path_records(caplog)
    assert warning.getMessage() == (
        "PutObject: the fast path is off, the AWS SDK makes every call: "
        "it failed: TypeError('a changed signature')"
    )
    assert warning.exc_info is not None


@pytest.mark.parametrize(
    "params",
    [
        {"Body": io.BytesIO(b"{}")},  # a stream
        {"Body": b"{}", "ChecksumAlgorithm": "SHA256"},  # a checksum of the caller's choice
        {"Body": b"{}", "Metadata": {"note": "caf\u00e9"}},  # refused by botocore
        {"Body": b"{}", "Metadata": {"a: b": "v"}},  # a name that is not an HTTP token
    ],
)
async def test_what_it_does_not_serialize_goes_to_the_client(
    local_stack: LocalStack, params: dict[str, Any]
) -> None:
    aws = local_stack.aws()
    bucket = local_stack.outputs["ProcessDataBucketName"]
    async with aws.client("s3") as s3, aws.fast(s3, PutObject) as put:
        key = unique("fast")
        try:
            await put(Bucket=bucket, Key=key, **params)
        except ParamValidationError:
            assert "Metadata" in params
        except ClientError as exc:  # sent by the client, whose signature AWS refuses as well
            assert params.get("Metadata") == {"a: b": "v"}, exc
        else:
            head = await s3.head_object(Bucket=bucket, Key=key)
            assert head["ContentLength"] == 2
        # Nothing failed on the way: the next call is made fast again.
        await put(Bucket=bucket, Key=key, Body=b"{}")
    assert (put.made, put.handed_over) == (1, 1)


@dataclass
class FastExecutions:
    executions: Executions
    put: PutObject
    start: StartExecution


@asynccontextmanager
async def fast_executions(
    local_stack: LocalStack, counted: Counted
) -> AsyncIterator[FastExecutions]:
    """Executions with route ``hello`` making its PutObject and StartExecution fast, as the
    daemon makes them."""
    aws = clients(local_stack.aws_settings, counted)
    routes = {"hello": RouteSettings(local_stack.outputs["HelloStateMachineArn"], input="body")}
    async with (
        aws.client("s3") as s3,
        aws.client("stepfunctions") as sfn,
        aws.fast(s3, PutObject) as put,
        aws.fast(sfn, StartExecution) as start,
    ):
        executions = Executions(
            s3,
            sfn,
            local_stack.outputs["ProcessDataBucketName"],
            "fast-calls-test",
            lambda: routes,
            put_object=put,
            start_execution=start,
        )
        yield FastExecutions(executions, put, start)


async def test_executions_start_uses_it(local_stack: LocalStack) -> None:
    counted = Counted()
    async with fast_executions(local_stack, counted) as fast:
        executions, put, start = fast.executions, fast.put, fast.start
        txn_id = unique("fast")
        await executions.start("hello", txn_id, {"foo": "bar"})
        stored = await executions.process_data.read(txn_id)
        described = await executions.describe(executions.execution_arn("hello", txn_id))
        machine = executions.routes["hello"].state_machine
        executions.routes["gone"] = RouteSettings(machine.replace("Hello", "Gone"), input="body")
        with pytest.raises(AwsError) as raised:
            await executions.start("gone", unique("fast"), {})
    assert stored == {"foo": "bar"}
    assert json.loads(described["input"]) == {"foo": "bar", "subtopic": "fast-calls-test"}
    assert raised.value.code == "StateMachineDoesNotExist"
    assert (put.made, start.made, start.handed_over) == (2, 1, 1)
    assert counted.calls.count("PutObject") == 2 and counted.calls.count("StartExecution") == 2


async def test_executions_start_keyed_uses_it_and_step_functions_idempotency(
    local_stack: LocalStack,
) -> None:
    """A keyed start made twice while its execution runs: the conditional PutObject goes
    fast, the second one's 412 through the client; both StartExecutions go fast, the second
    returning the running execution (the same name and input)."""
    async with fast_executions(local_stack, Counted()) as fast:
        executions, put, start = fast.executions, fast.put, fast.start
        txn_id, body = unique("K"), {"waitSeconds": 30}
        starts = [
            await executions.start_keyed("hello", txn_id, body, fingerprint(body)) for _ in range(2)
        ]
        with pytest.raises(IdempotencyConflictError):
            await executions.start_keyed("hello", txn_id, {"other": 1}, fingerprint({"other": 1}))
        await executions.stop(executions.execution_arn("hello", txn_id))
    assert [s.started_at is not None and s.description is None for s in starts] == [True, True]
    assert (put.made, put.handed_over) == (1, 2)
    assert (start.made, start.handed_over) == (2, 0)


# ------------------------------------------------------------------ throttling


@dataclass
class Endpoint:
    url: str
    requests: list[str] = field(default_factory=list)
    """What it was asked for: each request's X-Amz-Target, or method and path."""


@asynccontextmanager
async def throttling_endpoint(
    throttled: int,
    answer: Callable[[web.Request], web.Response],
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[Endpoint]:
    """An endpoint that answers the first ``throttled`` requests as AWS does when it
    throttles (Step Functions' ThrottlingException, S3's SlowDown), then with ``answer``;
    over HTTPS with ``ssl_context``."""
    requests: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        requests.append(request.headers.get("X-Amz-Target", f"{request.method} {request.path}"))
        if len(requests) > throttled:
            return answer(request)
        if "X-Amz-Target" in request.headers:
            body = {"__type": "ThrottlingException", "message": "Rate exceeded"}
            return web.json_response(body, status=400, content_type=JSON_1_0)
        return web.Response(
            status=503,
            content_type="application/xml",
            text="<Error><Code>SlowDown</Code><Message>Please reduce your request rate."
            "</Message></Error>",
        )

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    scheme = "http" if ssl_context is None else "https"
    try:
        yield Endpoint(f"{scheme}://127.0.0.1:{port}", requests)
    finally:
        await runner.cleanup()


def started(request: web.Request) -> web.Response:
    body = {"executionArn": f"arn:aws:states:us-east-1:{ACCOUNT}:execution:m:n", "startDate": 1}
    return web.json_response(body, content_type=JSON_1_0)


def stored(request: web.Request) -> web.Response:
    return web.Response(status=200, headers={"ETag": '"e"'})


def endpoint_settings(url: str) -> AwsSettings:
    return AwsSettings(
        region="us-east-1", endpoint_url=url, access_key_id="k", secret_access_key="s"
    )


@dataclass
class FastPathAnswers:
    """What an endpoint answers the fast path's requests (told by their User-Agent) while
    ``status`` is set; the client's, and all once it is None, are answered ``stored``."""

    status: int | None
    fast_requests: int = 0

    def __call__(self, request: web.Request) -> web.Response:
        if not request.headers["User-Agent"].startswith("notifier/"):
            return stored(request)
        self.fast_requests += 1
        if self.status is None:
            return stored(request)
        body = "<Error><Code>Failed</Code><Message>on purpose</Message></Error>"
        return web.Response(status=self.status, content_type="application/xml", text=body)


async def test_after_a_failure_the_client_calls_until_a_while_passes_without_one() -> None:
    answers = FastPathAnswers(status=500)
    clock = HeldClock()
    assert clock.held_at is not None
    failed_at, seconds = clock.held_at, fast_calls.CLIENT_ONLY_SECONDS
    async with throttling_endpoint(0, answers) as endpoint:
        aws = clients(endpoint_settings(endpoint.url), Counted())
        async with aws.client("s3") as s3, PutObject(s3, clock=clock) as put:
            await put(Bucket="b", Key="k", Body=b"{}")
            clock.held_at = failed_at + seconds - 1
            await put(Bucket="b", Key="k", Body=b"{}")  # goes well: the while is not longer
            assert (answers.fast_requests, put.handed_over) == (1, 2)
            clock.held_at = failed_at + seconds
            await put(Bucket="b", Key="k", Body=b"{}")  # fast, and failing again
            assert (answers.fast_requests, put.handed_over) == (2, 3)
            answers.status = None
            clock.held_at = failed_at + 2 * seconds - 1
            await put(Bucket="b", Key="k", Body=b"{}")
            clock.held_at = failed_at + 2 * seconds
            await put(Bucket="b", Key="k", Body=b"{}")
    assert (answers.fast_requests, put.made, put.handed_over) == (3, 1, 4)


async def test_a_refusal_the_client_gets_past_sends_the_calls_to_it_for_a_while() -> None:
    """A 4xx that only the fast path meets (as a clock the client corrects would give): it
    would meet it again, so the client makes the calls for a while, as after a failure."""
    answers = FastPathAnswers(status=400)
    clock = HeldClock()
    assert clock.held_at is not None
    refused_at = clock.held_at
    async with throttling_endpoint(0, answers) as endpoint:
        aws = clients(endpoint_settings(endpoint.url), Counted())
        async with aws.client("s3") as s3, PutObject(s3, clock=clock) as put:
            await put(Bucket="b", Key="k", Body=b"{}")
            clock.held_at = refused_at + fast_calls.CLIENT_ONLY_SECONDS - 1
            await put(Bucket="b", Key="k", Body=b"{}")
    assert (answers.fast_requests, put.made, put.handed_over) == (1, 0, 2)


async def test_s3_throttling_is_retried_by_the_client() -> None:
    counted = Counted()
    async with throttling_endpoint(2, stored) as endpoint:
        aws = clients(endpoint_settings(endpoint.url), counted)
        async with aws.client("s3") as client, aws.fast(client, PutObject) as call:
            result = await call(Bucket="b", Key="k", Body=b"{}")
            assert result["ETag"] == '"e"'
    # The fast attempt, then the client's: throttled once, retried, answered.
    assert len(endpoint.requests) == 3
    assert (call.made, call.handed_over) == (0, 1)
    assert counted.calls == [call.operation]


async def test_step_functions_throttling_is_raised_at_once_as_the_client_raises_it() -> None:
    """One request: neither the fast path nor the client tries again at once (the daemon
    backs off itself), and the error is the client's."""
    counted = Counted()
    async with throttling_endpoint(1, started) as endpoint:
        session = get_session()
        config = AioConfig(retries={"mode": "adaptive", "max_attempts": 2})
        async with session.create_client(
            "stepfunctions",
            region_name="us-east-1",
            endpoint_url=endpoint.url,
            aws_access_key_id="k",
            aws_secret_access_key="s",
            config=config,
        ) as sfn:
            machine = f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:m"
            async with StartExecution(sfn, counted) as start:
                with pytest.raises(ClientError) as raised:
                    await start(stateMachineArn=machine, name="n", input="{}")
                assert len(endpoint.requests) == 1
                # The next call is the fast path's again, not the client's.
                await start(stateMachineArn=machine, name="n", input="{}")
    error = AwsError.wrap("StartExecution", raised.value)
    assert (error.code, error.message, error.throttled) == (
        "ThrottlingException", "Rate exceeded", True,
    )  # fmt: skip
    assert len(endpoint.requests) == 2
    assert (start.made, start.handed_over) == (2, 0)
    assert counted.calls == ["StartExecution", "StartExecution"]


def described(request: web.Request) -> web.Response:
    arn = f"arn:aws:states:us-east-1:{ACCOUNT}:execution:m:n"
    return web.json_response({"executionArn": arn, "status": "RUNNING"}, content_type=JSON_1_0)


def throttled_executions(sfn: Any, start: StartExecution | None = None) -> Executions:
    machine = f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:m"
    routes = {"hello": RouteSettings(machine, input="body")}
    return Executions(
        None, sfn, "bucket", "unit", lambda: routes,
        put_object=no_call, start_execution=start,
    )  # fmt: skip


async def no_call(**params: Any) -> dict[str, Any]:
    return {}


async def test_a_throttled_start_is_tried_again_within_the_request_s_wait() -> None:
    async with throttling_endpoint(2, started) as endpoint:
        aws = clients(endpoint_settings(endpoint.url), Counted())
        async with aws.client("stepfunctions") as sfn, aws.fast(sfn, StartExecution) as start:
            executions = throttled_executions(sfn, start)
            await executions.start("hello", "n", {}, deadline=time.monotonic() + 30)
    assert len(endpoint.requests) == 3  # throttled twice, then started: no SDK retries
    assert executions.throttled == {"StartExecution": 2}


async def test_a_start_throttled_until_the_deadline_is_reported_as_throttling() -> None:
    async with throttling_endpoint(1000, started) as endpoint:
        aws = clients(endpoint_settings(endpoint.url), Counted())
        async with aws.client("stepfunctions") as sfn, aws.fast(sfn, StartExecution) as start:
            executions = throttled_executions(sfn, start)
            with pytest.raises(AwsError) as raised:
                await executions.start("hello", "n", {}, deadline=time.monotonic() + 0.5)
    assert (raised.value.code, raised.value.throttled) == ("ThrottlingException", True)
    assert 1 < len(endpoint.requests) == executions.throttled["StartExecution"]


async def test_a_throttled_read_is_one_call_and_backs_the_budget_off() -> None:
    """The Step Functions client makes a read once; the budget pauses after throttling,
    and a read with patience is made again in a later turn."""
    async with throttling_endpoint(1, described) as endpoint:
        aws = clients(endpoint_settings(endpoint.url), Counted())
        async with aws.client("stepfunctions") as sfn:
            executions = throttled_executions(sfn)
            arn = f"arn:aws:states:us-east-1:{ACCOUNT}:execution:m:n"
            with pytest.raises(AwsError) as raised:
                await executions.describe(arn)  # a sweep's: no patience, reported at once
            assert raised.value.throttled and len(endpoint.requests) == 1
            description = await executions.describe(arn, patience=30)
    assert description["status"] == "RUNNING"
    assert len(endpoint.requests) == 2
    assert executions.throttled == {"DescribeExecution": 1}


async def test_over_https_it_trusts_what_the_client_trusts(tmp_path: Path) -> None:
    tls = loopback_tls(tmp_path)
    machine = f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:m"
    async with throttling_endpoint(0, started, tls.served) as endpoint:
        trusting = client_for(
            "stepfunctions", "us-east-1", endpoint_url=endpoint.url, verify=str(tls.ca_file)
        )
        async with trusting as sfn, StartExecution(sfn) as start:
            for name in ("n1", "n2"):
                await start(stateMachineArn=machine, name=name, input="{}")
        assert (start.made, start.handed_over, start.connections.made) == (2, 0, 1)
        # The system's CAs never signed it: neither the fast path nor the client trusts it.
        once = AioConfig(retries={"total_max_attempts": 1})
        system = client_for("stepfunctions", "us-east-1", endpoint_url=endpoint.url, config=once)
        async with system as sfn, StartExecution(sfn) as start:
            with pytest.raises(SSLError):
                await start(stateMachineArn=machine, name="n3", input="{}")
        assert (start.made, start.handed_over) == (0, 1)
    assert len(endpoint.requests) == 2


# ------------------------------------------------------------------ the same requests as botocore


@asynccontextmanager
async def client_for(service: str, region: str, **kwargs: Any) -> AsyncIterator[Any]:
    async with get_session().create_client(
        service, region_name=region, aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret", **kwargs,
    ) as client:  # fmt: skip
        yield client


async def botocores_request(client: Any, operation: str, params: dict[str, Any]) -> AWSRequest:
    """The request botocore would send for ``params``, caught before it is sent."""
    caught: list[Any] = []

    class Caught(Exception):
        pass

    def catch(request: Any, **kwargs: Any) -> None:
        caught.append(request)
        raise Caught

    client.meta.events.register("before-send", catch)
    with pytest.raises(Caught):
        await getattr(client, operation)(**params)
    return caught[0]


def header(headers: list[tuple[str, str]], name: str) -> str:
    return next(value for key, value in headers if key.lower() == name.lower())


CLIENTS: list[tuple[str, str, dict[str, Any]]] = [
    ("s3", "eu-west-1", {}),
    ("s3", "us-east-1", {}),
    ("s3", "eu-central-1", {"config": AioConfig(s3={"addressing_style": "path"})}),
    ("s3", "us-east-2", {"config": AioConfig(use_fips_endpoint=True)}),
    ("s3", "us-east-1", {"endpoint_url": "http://127.0.0.1:4566"}),
    ("s3", "eu-west-1", {"aws_session_token": "FwoGZXIvYXdzEXAMPLE/token+="}),
    ("stepfunctions", "eu-west-1", {}),
    ("stepfunctions", "us-gov-west-1", {}),
    ("stepfunctions", "us-east-1", {"config": AioConfig(use_dualstack_endpoint=True)}),
    ("stepfunctions", "us-east-1", {"endpoint_url": "http://127.0.0.1:4566"}),
    ("stepfunctions", "eu-west-1", {"aws_session_token": "FwoGZXIvYXdzEXAMPLE/token+="}),
]


@pytest.mark.parametrize(("service", "region", "kwargs"), CLIENTS)
async def test_same_endpoint_and_a_signature_botocore_agrees_with(
    service: str, region: str, kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    if service == "s3":
        params: dict[str, Any] = {
            "Bucket": "notifier-data-example",
            "Key": "data/01JDQ8Z6V3 \u00fc+=~.json",  # encoded in the path as botocore does
            "Body": b'{"foo": "foo val"}',
            "ContentType": "application/json",
            "ServerSideEncryption": "AES256",
            "Metadata": {"notifier-route": "p1"},
        }
        call_type: type[FastCall] = PutObject
    else:
        machine = f"arn:aws:states:{region}:{ACCOUNT}:stateMachine:notifier-prod-Hello"
        params = {"stateMachineArn": machine, "name": "01JDQ8Z6V3", "input": '{"a": "b"}'}
        call_type = StartExecution
    async with client_for(service, region, **kwargs) as client:
        call = call_type(client)
        theirs = await botocores_request(client, xform_name(call_type.operation), params)
        target = await call.target(params)
        request = call.serialize(params)
        when = datetime.strptime(theirs.headers["X-Amz-Date"].decode(), "%Y%m%dT%H%M%SZ")
        ours = await call.sign(target, request, when.replace(tzinfo=UTC))
    assert target.url + request.path == theirs.url
    assert header(ours, "host") == theirs.headers["host"].decode()
    scope = theirs.headers["Authorization"].decode().split("Credential=")[1].split(",")[0]
    assert header(ours, "Authorization").split("Credential=")[1].split(",")[0] == scope
    # botocore's own (pure Python) signer computes the same signature for our request.
    credentials = Credentials("AKIDEXAMPLE", "secret", kwargs.get("aws_session_token"))
    check = AWSRequest(
        request.method,
        theirs.url,
        headers={k: v for k, v in ours if k.lower() not in ("authorization", "x-amz-date")},
        data=request.body,
    )
    if service == "s3":
        del check.headers["x-amz-content-sha256"]
        check.context.update(
            has_streaming_input=True,
            checksum={"request_algorithm": {"in": "header", "name": "x-amz-checksum-crc32"}},
        )
        signer: SigV4Auth = S3SigV4Auth(credentials, "s3", target.scope.region)
    else:
        signer = SigV4Auth(credentials, target.scope.service, target.scope.region)
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: when)
    signer.add_auth(check)
    assert check.headers["Authorization"] == header(ours, "Authorization")
    if credentials.token is not None:
        token = theirs.headers["X-Amz-Security-Token"].decode()
        assert header(ours, "X-Amz-Security-Token") == token
    if service == "stepfunctions":  # the very same request as botocore's, signature included
        assert request.body == theirs.body
        assert header(ours, "Authorization") == theirs.headers["Authorization"].decode()


async def test_a_client_that_does_not_sign_with_sigv4_makes_every_call() -> None:
    async with client_for("s3", "us-east-1", config=AioConfig(signature_version=UNSIGNED)) as s3:
        assert not PutObject(s3).enabled
    async with client_for("s3", "us-east-1") as s3:
        assert PutObject(s3).enabled
