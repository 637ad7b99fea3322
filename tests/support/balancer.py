"""HAProxy, Debian's package, in front of daemons: ``config/haproxy.cfg`` with the test's
port and servers, run in the foreground on loopback."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path

from notifier.lifecycle import Service, terminate
from tests.support.eventually import eventually

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "haproxy.cfg"
START_TIMEOUT = 20.0


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if found is None:
        raise RuntimeError("no haproxy: `make test-tools` installs Debian's haproxy")
    return found


def free_port() -> int:
    """A loopback port free now (HAProxy binds the port it is told, not port 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def config_for(port: int, servers: Mapping[str, int]) -> str:
    """The example, listening on ``port``, with one ``server`` line per daemon of
    ``servers`` (name -> port) in place of its own: its backend is its last section."""
    lines = []
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words[:1] == ["bind"]:
            line = f"    bind 127.0.0.1:{port}"
        elif words[:1] == ["server"]:
            continue
        lines.append(line)
    lines += [f"    server {name} 127.0.0.1:{server} check" for name, server in servers.items()]
    return "\n".join(lines) + "\n"


class HAProxy(Service):
    def __init__(self, servers: Mapping[str, int], directory: Path) -> None:
        self.servers = servers
        self.directory = directory
        self.port = 0
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.port = free_port()
        config = self.directory / "haproxy.cfg"
        config.write_text(config_for(self.port, self.servers), encoding="utf-8")
        log = (self.directory / "haproxy.log").open("wb")
        self._process = await asyncio.create_subprocess_exec(
            haproxy_binary(), "-db", "-f", str(config), stdout=log, stderr=log
        )
        await eventually(self._listening, START_TIMEOUT, interval=0.05)

    async def _listening(self) -> bool:
        assert self._process is not None
        if self._process.returncode is not None:
            raise RuntimeError(f"haproxy exited; see {self.directory / 'haproxy.log'}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    async def stop(self) -> None:
        await terminate(self._process, 10)
