"""`notifier local` as a user runs it: banner, standard clients, clean stop, clear errors."""

from __future__ import annotations

import asyncio
import errno
import importlib.metadata
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from notifier.apikeys import hash_key
from notifier.daemon import serve
from notifier.local.daemon_config import local_settings
from notifier.local.stack import LocalStack
from tests.support.eventually import EVENTUALLY
from tests.support.serve import BIN, run_notifier, serve_config, serve_under_systemd


async def held_requests(http: aiohttp.ClientSession, url: str, key: str) -> int:
    """How many requests the daemon holds (a detail of /readyz: keys are required)."""
    async with http.get(f"{url}/readyz", headers={"x-api-key": key}) as response:
        return int((await response.json())["held"])


PORT_OPTIONS = (
    "--aws-port", "--mqtt-port", "--mqtt-tls-port", "--mqtt-wss-port", "--issuer-port",
    "--http-port",
)  # fmt: skip


async def test_taken_port_is_one_line_naming_the_option(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def run_with_taken(option: str) -> tuple[int | None, str]:
            """``notifier local`` with ``option`` on the taken port (the others free),
            in a work directory of its own: its exit status and output."""
            others = [arg for o in PORT_OPTIONS if o != option for arg in (o, "0")]
            work_dir = tmp_path / option.lstrip("-")
            process = await run_notifier(
                "local", option, str(port), *others, "--work-dir", str(work_dir)
            )
            stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
            return process.returncode, stdout.decode() + stderr.decode()

        # All at once: each waits mostly for its own stack to start.
        runs = await asyncio.gather(*(run_with_taken(option) for option in PORT_OPTIONS))
    for option, (returncode, output) in zip(PORT_OPTIONS, runs, strict=True):
        assert returncode != 0, output
        errors = [line for line in output.splitlines() if str(port) in line]
        assert len(errors) == 1, output
        assert option in errors[0] and "in use" in errors[0]
        assert "Traceback" not in output
        # Refused before anything started: the stack makes its CA there first.
        assert not (tmp_path / option.lstrip("-")).exists()


async def test_a_daemon_port_taken_once_the_stack_is_up_is_one_line_naming_the_option(
    local_stack: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    """``notifier local``'s daemon, when its port was taken after ``notifier local`` found it
    free."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = {"NOTIFIER_HTTP_PORT": str(port), "NOTIFIER_DAEMON_INSTANCE_ID": "taken-port"}
        settings = local_settings(local_stack, env=env)
        with caplog.at_level(logging.ERROR):
            status = await serve(settings, stop=asyncio.Event(), port_hint="--http-port")
    assert status == 1
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    in_use = os.strerror(errno.EADDRINUSE)
    assert errors == [
        f"notifier: cannot listen on 127.0.0.1:{port}: {in_use} (choose another with --http-port)"
    ]


async def test_local_serves_standard_clients_and_stops_on_sigterm(tmp_path: Path) -> None:
    ports = [arg for option in PORT_OPTIONS for arg in (option, "0")]
    process = await run_notifier("local", *ports, "--work-dir", str(tmp_path / "stack"))
    assert process.stdout is not None
    banner = []
    async with asyncio.timeout(180):
        while not banner or not banner[-1].startswith("export AWS_ACCESS_KEY_ID"):
            line = (await process.stdout.readline()).decode()
            assert line, "notifier local exited before it was up"
            banner.append(line.strip())

    def url_on(label: str) -> str:
        [line] = [line for line in banner if line.startswith(label)]
        return next(w for w in line.split() if w.startswith("http://"))

    daemon, endpoint = url_on("notifier daemon"), url_on("AWS API endpoint")
    assert url_on("dashboard") == f"{daemon}/"
    assert any("mqtt://127.0.0.1:" in line for line in banner)
    assert any(line.startswith("MQTT broker       mqtts://127.0.0.1:") for line in banner)
    assert f"broker's CA       {tmp_path / 'stack' / 'ca.pem'}" in banner
    assert any(line.startswith("daemon MQTT       transport 'custom-auth'") for line in banner)
    # The daemon takes only JSON bodies: every example that posts one says so.
    posts = [line for line in banner if line.startswith("curl -sS -X POST")]
    assert len(posts) == 3
    assert all("-H 'content-type: application/json'" in line for line in posts), posts

    async with aiohttp.ClientSession() as http:
        async with http.get(url_on("dashboard")) as response:
            assert (response.status, response.content_type) == (200, "text/html")
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


async def test_serve_with_a_bad_config_is_one_line_and_exits_ex_config(tmp_path: Path) -> None:
    config = tmp_path / "notifier.toml"
    config.write_text("[http]\nport = 'eighty'\n")
    process = await run_notifier("serve", "--config", str(config))
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 78
    lines = (stdout + stderr).decode().strip().splitlines()
    assert len(lines) == 1 and str(config) in lines[0] and "port" in lines[0]


async def test_serve_reads_the_file_notifier_config_names(tmp_path: Path) -> None:
    config = tmp_path / "from-env.toml"
    config.write_text("[http]\nport = -1\n")
    process = await run_notifier("serve", env={"NOTIFIER_CONFIG": str(config)})
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 78
    assert str(config) in (stdout + stderr).decode()


async def test_a_usage_error_is_not_a_configuration_error() -> None:
    process = await run_notifier("serve", "--workers", "0")
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2, stderr.decode()
    assert "--workers" in stderr.decode()


async def test_version_is_the_package_version() -> None:
    process = await run_notifier("--version")
    stdout, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    assert stdout.decode().split() == ["notifier", importlib.metadata.version("notifier")]


async def test_serve_under_systemd_reloads_on_sighup_and_stops_on_sigterm(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    served = await serve_under_systemd(local_stack, tmp_path)
    key, config, systemd, process = served.key, served.config, served.systemd, served.process
    notified = systemd.notified
    with systemd:
        async with asyncio.timeout(60):
            ready = await notified()
        assert ready.startswith("READY=1\nSTATUS=serving on http://")
        url = ready.split("serving on ")[1].strip()
        headers = {"x-api-key": key, "Prefer": "wait=60"}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/hello", json={"who": "serve"}, headers=headers) as r:
                answer = await r.json()
                assert r.status == 200, answer
            assert answer["output"]["who"] == "serve" and answer["completedVia"] == "mqtt"

            # A request held across a reload that adds a route.
            held = asyncio.ensure_future(
                http.post(f"{url}/hello", json={"waitSeconds": 2}, headers=headers)
            )
            async with asyncio.timeout(EVENTUALLY):
                while await held_requests(http, url, key) == 0:  # noqa: ASYNC110 (another process)
                    await asyncio.sleep(0.05)
            config.write_text(
                serve_config(
                    local_stack,
                    hash_key(key),
                    {"hello": "HelloStateMachineArn", "again": "HelloStateMachineArn"},
                )
            )
            process.send_signal(signal.SIGHUP)
            async with asyncio.timeout(30):
                assert (await notified()).startswith("RELOADING=1\nMONOTONIC_USEC=")
                assert (await notified()).startswith("READY=1")
            async with http.post(f"{url}/again", json={}, headers=headers) as r:
                assert r.status == 200, await r.text()
            async with await held as r:
                assert r.status == 200 and (await r.json())["status"] == "SUCCEEDED"

        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await notified() == "STOPPING=1"
            await process.wait()
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


# One interpreter with the local extra's modules made absent, as in a plain install, runs
# each command line given and prints [exit status, stdout, stderr] of each, as JSON.
WITHOUT_LOCAL_EXTRA = """
import contextlib, io, json, sys
sys.modules.update(moto=None, amqtt=None)
from notifier.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
            status = 0
        except SystemExit as exc:
            status = exc.code
    results.append([status, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


async def test_without_the_local_extra_the_daemon_runs_and_local_commands_name_it() -> None:
    runs = [["serve", "--help"], ["--help"], ["apikey", "ci"], ["bench", "--help"]]
    runs += [["local"], ["bench"]]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WITHOUT_LOCAL_EXTRA, json.dumps(runs),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    results = dict(zip(map(tuple, runs), json.loads(stdout), strict=True))
    for argv in runs[:4]:
        status, out, err = results[tuple(argv)]
        assert (status, err) == (0, ""), (argv, err)
        assert out
    for command in ("local", "bench"):
        status, out, err = results[(command,)]
        assert (status, out) == (2, "")
        assert err.splitlines() == [
            f"notifier {command}: needs the local stack, not installed (moto is missing): "
            "pip install 'notifier[local]'"
        ]
