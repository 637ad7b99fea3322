"""A daemon in a process of its own, so that its CPU time and peak memory can be read.

The parent hands the child its :class:`~notifier.config.Settings` (pickled, on stdin); the
child runs :func:`notifier.daemon.serve` and prints ``READY <port>`` once it serves. SIGTERM
drains and stops it, as for ``notifier serve``. CPU time and peak RSS come from
``/proc/<pid>`` (Linux), counting all of the daemon's threads.
"""

from __future__ import annotations

import asyncio
import os
import pickle  # nosec B403  # settings from the parent bench process, over a pipe
import re
import sys
from pathlib import Path
from typing import IO

from notifier.config import Settings
from notifier.lifecycle import NotReadyError, Service, announce_ready, terminate, wait_ready

START_TIMEOUT = 60.0
_API_CALLS = re.compile(r'^notifier_aws_api_calls_total\{operation="([^"]+)"\} ([0-9.e+]+)$', re.M)


class DaemonProcessError(Exception):
    pass


class DaemonProcess(Service):
    """``python -m notifier.bench.daemon_process``, its log lines going to ``log``."""

    def __init__(self, settings: Settings, log: IO[bytes]) -> None:
        self.settings = settings
        self._log = log
        self._process: asyncio.subprocess.Process | None = None
        self.port = 0

    @property
    def pid(self) -> int:
        assert self._process is not None, "the daemon process is not running"
        return self._process.pid

    @property
    def url(self) -> str:
        return f"http://{self.settings.http.host}:{self.port}"

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "notifier.bench.daemon_process",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self._process.stdin is not None
        self._process.stdin.write(pickle.dumps(self.settings))
        self._process.stdin.close()
        try:
            (port,) = await wait_ready(self._process, START_TIMEOUT)
        except NotReadyError as exc:
            await self.stop()
            if exc.line is None:
                raise DaemonProcessError("the daemon did not start in time") from None
            raise DaemonProcessError(
                f"the daemon did not start (exit status {self._process.returncode}); "
                f"see its log {getattr(self._log, 'name', '')}"
            ) from None
        self.port = int(port)

    async def stop(self) -> None:
        await terminate(self._process, 30)

    def cpu_seconds(self) -> float:
        """User plus system CPU time the daemon has used so far."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        # utime and stime are fields 14 and 15 of proc(5); fields[0] is field 3.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        """The largest resident set the daemon has had (VmHWM)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise DaemonProcessError("no VmHWM in /proc/<pid>/status")


def api_calls(metrics_text: str) -> dict[str, int]:
    """AWS API calls by operation, from the daemon's ``/metrics``."""
    return {op: int(float(count)) for op, count in _API_CALLS.findall(metrics_text)}


def main() -> None:
    from notifier.daemon import serve
    from notifier.logs import setup_logging

    settings: Settings = pickle.load(sys.stdin.buffer)  # nosec B301  # the parent's own pipe
    setup_logging(settings.daemon.log_level, json_lines=True)

    sys.exit(asyncio.run(serve(settings, on_ready=lambda daemon: announce_ready(daemon.port))))


if __name__ == "__main__":
    main()
