"""`notifier serve` as systemd runs it, for the tests: the command, a configuration for the
local stack, and a notification socket standing in for systemd."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from notifier.apikeys import hash_key, new_key
from notifier.local.stack import LocalStack

BIN = Path(sys.executable).parent


async def run_notifier(
    *args: str, env: dict[str, str] | None = None, stderr: int = asyncio.subprocess.PIPE
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(BIN / "notifier"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        env={**os.environ, **(env or {})},
    )


def serve_config(stack: LocalStack, key_sha256: str, routes: dict[str, str]) -> str:
    sections = "".join(
        f'[routes.{name}]\nstate_machine = "{stack.outputs[output]}"\ninput = "body"\n'
        for name, output in routes.items()
    )
    return f"""
[http]
port = 0
[daemon]
instance_id = "serve-test"
[aws]
region = "us-east-1"
endpoint_url = "{stack.aws_settings.endpoint_url}"
access_key_id = "local"
secret_access_key = "local"
[mqtt]
transport = "custom-auth"
endpoint = "{stack.settings.host}"
port = {stack.broker.tls_port}
ca_file = "{stack.ca_file}"
[iotauth]
issuer_url = "{stack.issuer_url}"
[s3]
bucket = "{stack.outputs["ProcessDataBucketName"]}"
[api_keys.test]
sha256 = "{key_sha256}"
rate = 1000
burst = 1000
roles = ["admin"]
{sections}"""


class FakeSystemd:
    """A datagram socket at ``path`` where the notifications go, with a watchdog asked for
    (every second: ``WATCHDOG_USEC`` is 2 s); ``env`` tells a process so."""

    def __init__(self, path: Path) -> None:
        self.env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"}
        self.pings = 0
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))
        self._socket.setblocking(False)

    async def notified(self) -> str:
        """The next state sent other than a watchdog ping (those are counted)."""
        loop = asyncio.get_running_loop()
        while (message := (await loop.sock_recv(self._socket, 4096)).decode()) == "WATCHDOG=1":
            self.pings += 1
        return message

    async def pinged(self) -> None:
        """Until a watchdog ping sent from now on (those already sent are counted and passed
        over); a state sent meanwhile fails the test."""
        while True:
            try:
                message = self._socket.recv(4096).decode()
            except BlockingIOError:
                break
            assert message == "WATCHDOG=1", message
            self.pings += 1
        message = (await asyncio.get_running_loop().sock_recv(self._socket, 4096)).decode()
        assert message == "WATCHDOG=1", message
        self.pings += 1

    def __enter__(self) -> FakeSystemd:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._socket.close()


@dataclass
class ServedProcess:
    """`notifier serve` in a process of its own, under a stand-in systemd."""

    key: str
    """The API key the configuration knows."""
    config: Path
    systemd: FakeSystemd
    process: asyncio.subprocess.Process


async def serve_under_systemd(stack: LocalStack, directory: Path, *args: str) -> ServedProcess:
    """``notifier serve --config <directory>/notifier.toml *args`` against ``stack``, route
    ``hello`` configured, notifying a :class:`FakeSystemd` in ``directory``."""
    key = new_key()
    config = directory / "notifier.toml"
    config.write_text(serve_config(stack, hash_key(key), {"hello": "HelloStateMachineArn"}))
    systemd = FakeSystemd(directory / "notify")
    # Nobody reads its logs here: discard them rather than let a pipe fill up.
    process = await run_notifier(
        "serve", "--config", str(config), *args, env=systemd.env,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return ServedProcess(key, config, systemd, process)
