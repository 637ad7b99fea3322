"""`notifier local` as a user runs it: banner, standard clients, clean stop, clear errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


async def run_notifier(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(BIN / "notifier"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_taken_port_is_one_line_naming_the_option() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for option in ("--aws-port", "--mqtt-port"):
            other = "--mqtt-port" if option == "--aws-port" else "--aws-port"
            process = await run_notifier("local", option, str(port), other, "0")
            stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
            lines = stderr.decode().strip().splitlines()
            assert process.returncode == 2
            assert len(lines) == 1, stderr.decode()
            assert str(port) in lines[0] and option in lines[0]
            assert "Traceback" not in stdout.decode() + stderr.decode()


async def test_local_serves_standard_clients_and_stops_on_sigterm() -> None:
    process = await run_notifier("local", "--aws-port", "0", "--mqtt-port", "0")
    assert process.stdout is not None
    banner = []
    async with asyncio.timeout(180):
        while not banner or not banner[-1].startswith("Try"):
            line = (await process.stdout.readline()).decode()
            assert line, "notifier local exited before it was up"
            banner.append(line.strip())
    endpoint = next(w for line in banner for w in line.split() if w.startswith("http://"))
    assert any("mqtt://127.0.0.1:" in line for line in banner)

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
