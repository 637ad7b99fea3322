"""systemd's service notification protocol (sd_notify): READY, WATCHDOG, RELOADING, STOPPING.

Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op. The watchdog is fed from the
event loop itself, so a loop that stops turning stops the pings and systemd restarts us.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

from notifier.lifecycle import BackgroundTasks, Service

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends state strings to the socket systemd names in ``NOTIFY_SOCKET``."""

    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # an abstract socket
            address = "\0" + address[1:]
        self.address = address or None
        watchdog_usec = int(env.get("WATCHDOG_USEC", "0") or 0)
        watchdog_pid = env.get("WATCHDOG_PID")
        mine = watchdog_pid is None or watchdog_pid == str(os.getpid())
        self.watchdog_interval = watchdog_usec / 2_000_000 if watchdog_usec and mine else None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *states: str) -> None:
        if self.address is None:
            return
        message = "\n".join(states).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message, self.address)
        except OSError as exc:
            log.warning("sd_notify to %r failed: %s", self.address, exc)

    def ready(self, status: str = "") -> None:
        self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> None:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")


class Watchdog(Service):
    """Pings systemd's watchdog from the event loop at half the configured interval."""

    def __init__(self, notifier: SystemdNotifier) -> None:
        self.notifier = notifier
        self._tasks = BackgroundTasks()

    async def start(self) -> None:
        if self.notifier.enabled and self.notifier.watchdog_interval:
            self._tasks.every(
                "watchdog", self.notifier.watchdog_interval, self.notifier.watchdog, at_once=True
            )

    async def stop(self) -> None:
        await self._tasks.stop()
