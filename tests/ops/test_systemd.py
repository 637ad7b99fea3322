"""sd_notify against a real datagram socket, and the unit file through systemd-analyze."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from notifier.ops.systemd import SystemdNotifier, Watchdog

REPO = Path(__file__).resolve().parents[2]


def listening_socket(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    return sock, path


def received(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


def test_states_reach_the_socket(tmp_path: Path) -> None:
    sock, path = listening_socket(tmp_path)
    with sock:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
        notifier.ready("serving")
        notifier.reloading()
        notifier.stopping()
        messages = received(sock)
    assert messages[0] == "READY=1\nSTATUS=serving"
    assert messages[1].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert messages[2] == "STOPPING=1"


def test_without_systemd_nothing_is_sent() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    notifier.ready()  # no socket, no error


async def test_watchdog_pings_from_the_event_loop(tmp_path: Path) -> None:
    sock, path = listening_socket(tmp_path)
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000", "WATCHDOG_PID": str(os.getpid())}
    with sock:
        loop = asyncio.get_running_loop()
        async with Watchdog(SystemdNotifier(env)):
            pings = [(await loop.sock_recv(sock, 4096)).decode() for _ in range(3)]
    assert set(pings) == {"WATCHDOG=1"}


def test_watchdog_meant_for_another_process_is_ignored() -> None:
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "20000", "WATCHDOG_PID": "1"}
    assert SystemdNotifier(env).watchdog_interval is None


def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is needed to verify config/notifier.service")
    unit = (REPO / "config" / "notifier.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "Restart=on-failure" in unit
    # verify checks that ExecStart exists: point it at this checkout's notifier.
    installed = str(Path(sys.executable).parent / "notifier")
    target = tmp_path / "notifier.service"
    target.write_text(unit.replace("/opt/notifier/.venv/bin/notifier", installed))
    result = subprocess.run(
        [analyze, "verify", str(target)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


async def test_watchdog_pings_go_on_after_one_fails(tmp_path: Path) -> None:
    class Flaky(SystemdNotifier):
        failures = 0

        def watchdog(self) -> None:
            if not self.failures:
                self.failures += 1
                raise OSError("the socket broke")
            super().watchdog()

    sock, path = listening_socket(tmp_path)
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000", "WATCHDOG_PID": str(os.getpid())}
    with sock:
        loop = asyncio.get_running_loop()
        notifier = Flaky(env)
        async with Watchdog(notifier):
            pings = [(await loop.sock_recv(sock, 4096)).decode() for _ in range(2)]
            assert "watchdog" in {t.get_name() for t in asyncio.all_tasks() if not t.done()}
    assert notifier.failures == 1 and set(pings) == {"WATCHDOG=1"}
