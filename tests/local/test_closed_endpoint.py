"""The local AWS endpoint is as closed as AWS's, shown with stock clients: a browser's CORS
preflight, an unsigned call, a boto3 and an aiobotocore client with a wrong secret, a call
carrying a foreign Origin, a rebound Host name are refused; the stack's credentials work."""

from __future__ import annotations

import asyncio
import subprocess  # nosec B404  # runs this project's own command line
import sys
from typing import Any

import aiohttp
import boto3
import pytest
import requests
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import ClientError

from notifier.local.stack import LocalStack

ONCE = Config(retries={"max_attempts": 1})


def boto3_client(stack: LocalStack, service: str, secret: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=stack.aws_settings.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key=secret,
        config=ONCE,
    )


async def get(url: str, **kwargs: Any) -> requests.Response:
    return await asyncio.to_thread(requests.request, url=url, **kwargs)


async def test_a_browser_preflight_gets_no_cors_answer(local_stack: LocalStack) -> None:
    answer = await get(
        f"{local_stack.aws_settings.endpoint_url}/",
        method="OPTIONS",
        headers={
            "Origin": "https://evil.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,x-amz-target",
        },
    )
    assert answer.status_code == 403
    assert not any(name.lower().startswith("access-control-") for name in answer.headers)


async def test_an_unsigned_call_is_refused(local_stack: LocalStack) -> None:
    answer = await get(
        f"{local_stack.aws_settings.endpoint_url}/",
        method="POST",
        data="Action=ListQueues&Version=2012-11-05",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 403
    assert "Missing Authentication Token" in answer.json()["message"]


async def test_a_boto3_client_with_a_wrong_secret_is_refused(local_stack: LocalStack) -> None:
    wrong = boto3_client(local_stack, "stepfunctions", "wrong-secret")
    with pytest.raises(ClientError) as refused:
        await asyncio.to_thread(wrong.list_state_machines)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    right = boto3_client(local_stack, "stepfunctions", "local")
    machines = await asyncio.to_thread(right.list_state_machines)
    assert machines["stateMachines"]


async def test_s3_signed_by_boto3_works_and_a_wrong_secret_does_not(
    local_stack: LocalStack,
) -> None:
    right = boto3_client(local_stack, "s3", "local")
    bucket = "notifier-closed-endpoint"
    await asyncio.to_thread(right.create_bucket, Bucket=bucket)
    await asyncio.to_thread(right.put_object, Bucket=bucket, Key="a b/c+d", Body=b"x" * 10)
    got = await asyncio.to_thread(right.get_object, Bucket=bucket, Key="a b/c+d")
    assert got["Body"].read() == b"x" * 10
    wrong = boto3_client(local_stack, "s3", "guess")
    with pytest.raises(ClientError):
        await asyncio.to_thread(wrong.get_object, Bucket=bucket, Key="a b/c+d")


async def test_an_aiobotocore_client_with_a_wrong_secret_is_refused(
    local_stack: LocalStack,
) -> None:
    session = get_session()
    async with session.create_client(
        "sqs",
        endpoint_url=local_stack.aws_settings.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="wrong",
        config=ONCE,
    ) as sqs:
        with pytest.raises(ClientError):
            await sqs.list_queues()
    async with local_stack.aws().client("sqs") as sqs:
        await sqs.list_queues()


async def test_a_call_carrying_an_origin_is_refused_even_when_signed(
    local_stack: LocalStack,
) -> None:
    client = boto3_client(local_stack, "stepfunctions", "local")

    def add_origin(request: Any, **_: Any) -> None:
        request.headers["Origin"] = "https://evil.example"

    client.meta.events.register("before-send.*", add_origin)
    with pytest.raises(ClientError) as refused:
        await asyncio.to_thread(client.list_state_machines)
    assert "Cross-origin" in str(refused.value)


async def test_a_rebound_host_name_is_refused(local_stack: LocalStack) -> None:
    url = f"{local_stack.aws_settings.endpoint_url}/"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, headers={"Host": "evil.example"}, data=b"{}") as answer:
            assert answer.status == 403
            assert "not loopback" in (await answer.json(content_type=None))["message"]


@pytest.mark.parametrize(
    "command",
    [
        ["-c", "from notifier.cli import main; main()", "local", "--host", "0.0.0.0"],  # nosec B104
        ["-m", "notifier.local.endpoint", "--host", "192.0.2.1"],
    ],
    ids=["notifier-local", "endpoint"],
)
def test_the_stack_refuses_to_listen_beyond_loopback(command: list[str]) -> None:
    done = subprocess.run(  # nosec B603  # this interpreter, fixed arguments
        [sys.executable, *command], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "is not a loopback address" in done.stderr
