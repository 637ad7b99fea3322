"""`notifier local` as a user runs it: banner, standard clients, clean stop, clear errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from notifier.local.stack import LocalStack

BIN = Path(sys.executable).parent


async def run_notifier(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(BIN / "notifier"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


PORT_OPTIONS = ("--aws-port", "--mqtt-port", "--issuer-port", "--http-port")


async def test_taken_port_is_one_line_naming_the_option() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for option in PORT_OPTIONS:
            others = [arg for o in PORT_OPTIONS if o != option for arg in (o, "0")]
            process = await run_notifier("local", option, str(port), *others)
            stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
            output = stdout.decode() + stderr.decode()
            assert process.returncode != 0
            errors = [line for line in output.splitlines() if str(port) in line]
            assert len(errors) == 1, output
            assert option in errors[0] and "in use" in errors[0]
            assert "Traceback" not in output


async def test_local_serves_standard_clients_and_stops_on_sigterm() -> None:
    process = await run_notifier(
        "local", "--aws-port", "0", "--mqtt-port", "0", "--issuer-port", "0", "--http-port", "0"
    )
    assert process.stdout is not None
    banner = []
    async with asyncio.timeout(180):
        while not banner or not banner[-1].startswith("Try"):
            line = (await process.stdout.readline()).decode()
            assert line, "notifier local exited before it was up"
            banner.append(line.strip())
    urls = [w for line in banner for w in line.split() if w.startswith("http://")]
    daemon, endpoint = urls[0], urls[1]
    assert any("mqtt://127.0.0.1:" in line for line in banner)

    async with aiohttp.ClientSession() as http:
        async with http.post(f"{daemon}/p1", json={"foo": "foo val"}) as response:
            answer = await response.json()
            assert response.status == 200, answer
    assert answer["status"] == "SUCCEEDED"
    assert answer["completedVia"] == "mqtt"
    assert answer["processData"]["foo"] == "foo val"
    for step in "abcdef":
        assert f"step-{step}-output" in answer["processData"]

    aws = await asyncio.create_subprocess_exec(
        str(BIN / "aws"),
        "--endpoint-url",
        endpoint,
        "stepfunctions",
        "list-state-machines",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
             "AWS_DEFAULT_REGION": "us-east-1"},
    )  # fmt: skip
    listed, _ = await aws.communicate()
    names = {m["name"] for m in json.loads(listed)["stateMachines"]}
    assert any("ProcessA" in n for n in names) and any("Hello" in n for n in names)

    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    assert "Traceback" not in stderr.decode()


async def test_serve_with_a_bad_config_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "notifier.toml"
    config.write_text("[http]\nport = 'eighty'\n")
    process = await run_notifier("serve", "--config", str(config))
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    lines = (stdout + stderr).decode().strip().splitlines()
    assert len(lines) == 1 and str(config) in lines[0] and "port" in lines[0]


async def test_serve_answers_then_stops_on_sigterm(local_stack: LocalStack, tmp_path: Path) -> None:
    config = tmp_path / "notifier.toml"
    config.write_text(
        f"""
[http]
port = 0
[daemon]
instance_id = "serve-test"
[aws]
region = "us-east-1"
endpoint_url = "{local_stack.aws_settings.endpoint_url}"
access_key_id = "local"
secret_access_key = "local"
[mqtt]
transport = "tcp"
endpoint = "{local_stack.settings.host}"
port = {local_stack.broker.port}
[iotauth]
issuer_url = "{local_stack.issuer_url}"
api_key = "{local_stack.settings.issuer_api_key}"
[s3]
bucket = "{local_stack.outputs["ProcessDataBucketName"]}"
[routes.hello]
state_machine = "{local_stack.outputs["HelloStateMachineArn"]}"
input = "body"
"""
    )
    process = await run_notifier("serve", "--config", str(config))
    assert process.stderr is not None
    async with asyncio.timeout(60):
        while True:
            line = (await process.stderr.readline()).decode()
            assert line, "notifier serve exited before it listened"
            message = json.loads(line)["message"]  # not a terminal: JSON lines
            if " listening on http://" in message:
                url = message.split(" listening on ")[1].strip()
                break
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/hello", json={"who": "serve"}) as response:
            answer = await response.json()
    assert response.status == 200, answer
    assert answer["output"]["who"] == "serve" and answer["completedVia"] == "mqtt"

    process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(process.wait(), 30)
    assert process.returncode == 0


async def test_deploy_creates_then_updates_a_stack(local_stack: LocalStack) -> None:
    args = (
        "deploy", "--stack", "notifier-deploytest", "--stage", "deploytest",
        "--endpoint-url", str(local_stack.aws_settings.endpoint_url), "--region", "us-east-1",
        "--json",
    )  # fmt: skip
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
    for _ in ("create", "update"):
        process = await asyncio.create_subprocess_exec(
            str(BIN / "notifier"), *args, stdout=asyncio.subprocess.PIPE, env=env
        )
        stdout, _ = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0
        outputs = json.loads(stdout)
        assert outputs["Stage"] == "deploytest"
        assert outputs["HelloStateMachineArn"].endswith(":notifier-deploytest-Hello")
    async with local_stack.aws().client("cloudformation") as cfn:
        stack = (await cfn.describe_stacks(StackName="notifier-deploytest"))["Stacks"][0]
    assert stack["StackStatus"] in {"CREATE_COMPLETE", "UPDATE_COMPLETE"}
