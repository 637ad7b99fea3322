"""A daemon in a process of its own, so that its CPU time and peak memory can be read.

The parent hands the child its :class:`~notifier.config.Settings`, how many workers to
run and the CPUs to run on (pickled, on stdin); the child runs
:func:`notifier.daemon.serve`, or with several workers :func:`notifier.ops.workers.supervise`,
and prints ``READY <port>`` (then each worker's own address) once it serves. SIGTERM drains
and stops it, as for ``notifier serve``. CPU time and peak RSS come from ``/proc/<pid>``
(Linux), counting all of the daemon's threads and, with workers, all of their processes.
"""

from __future__ import annotations

import asyncio
import os
import pickle  # nosec B403  # settings from the parent bench process, over a pipe
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from notifier.config import Settings
from notifier.lifecycle import (
    NotReadyError,
    Service,
    announce_ready,
    start_python,
    terminate,
    wait_ready,
)

START_TIMEOUT = 60.0
_API_CALLS = re.compile(r'^notifier_aws_api_calls_total\{operation="([^"]+)"\} ([0-9.e+]+)$', re.M)


class DaemonProcessError(Exception):
    pass


class DaemonProcess(Service):
    """``python -m notifier.bench.daemon_process``, its log lines going to ``log``."""

    def __init__(
        self,
        settings: Settings,
        log: IO[bytes],
        workers: int = 1,
        env: Mapping[str, str] | None = None,
        cores: frozenset[int] | None = None,
    ) -> None:
        self.settings = settings
        self.env = dict(env or {})
        """Added to the process's environment."""
        self.workers = workers
        self.cores = cores
        """The CPUs it runs on, its workers too (None: those of the bench)."""
        self._log = log
        self._process: asyncio.subprocess.Process | None = None
        self.port = 0
        self.worker_urls: list[str] = []
        """With workers, the address of each one's own."""

    @property
    def pid(self) -> int:
        assert self._process is not None, "the daemon process is not running"
        return self._process.pid

    @property
    def url(self) -> str:
        return f"http://{self.settings.http.host}:{self.port}"

    @property
    def instance_urls(self) -> list[str]:
        """Where each instance answers for itself (its metrics, its held requests)."""
        return self.worker_urls or [self.url]

    async def start(self) -> None:
        self._process = await start_python(
            "notifier.bench.daemon_process",
            (self.settings, self.workers, self.cores),
            {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
            stderr=self._log,
        )
        try:
            port, *worker_urls = await wait_ready(self._process, START_TIMEOUT)
        except NotReadyError as exc:
            await self.stop()
            if exc.line is None:
                raise DaemonProcessError("the daemon did not start in time") from None
            raise DaemonProcessError(
                f"the daemon did not start (exit status {self._process.returncode}); "
                f"see its log {getattr(self._log, 'name', '')}"
            ) from None
        self.port = int(port)
        self.worker_urls = worker_urls

    async def stop(self) -> None:
        await terminate(self._process, 30)

    async def kill(self) -> None:
        """SIGKILL, as a crash: nothing drains, nothing is answered; returns once it is gone."""
        assert self._process is not None, "the daemon process is not running"
        self._process.kill()
        await self._process.wait()

    def cpu_seconds(self) -> float:
        """User plus system CPU time the daemon (and its workers) have used so far."""
        ticks = 0
        for pid in self._pids():
            fields = _stat_fields(pid)
            # utime and stime are fields 14 and 15 of proc(5); fields[0] is field 3.
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        """The largest resident set the daemon has had (VmHWM), with workers the sum of
        each process's."""
        total = 0
        for pid in self._pids():
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            peak = next((line.split()[1] for line in lines if line.startswith("VmHWM:")), None)
            if peak is None:
                raise DaemonProcessError(f"no VmHWM in /proc/{pid}/status")
            total += int(peak)
        return total / 1024

    def _pids(self) -> list[int]:
        """The daemon's process and, with workers, theirs."""
        pids = [self.pid]
        if self.workers > 1:
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        if int(_stat_fields(int(entry.name))[1]) == self.pid:
                            pids.append(int(entry.name))
                    except (OSError, IndexError, ValueError):
                        continue  # gone meanwhile
        return pids


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat from field 3 on (after the command name, which may hold spaces)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def api_calls(metrics_text: str) -> dict[str, int]:
    """AWS API calls by operation, from the daemon's ``/metrics``."""
    return {op: int(float(count)) for op, count in _API_CALLS.findall(metrics_text)}


def main() -> None:
    from notifier.bench.cores import pin
    from notifier.daemon import serve
    from notifier.logs import setup_logging
    from notifier.ops.workers import Worker, supervise

    settings: Settings
    cores: frozenset[int] | None
    settings, workers, cores = pickle.load(sys.stdin.buffer)  # nosec B301  # the parent's pipe
    if cores is not None:
        pin(cores)
    setup_logging(settings.daemon.log_level, json_lines=True)

    def all_ready(started: list[Worker]) -> None:
        port = started[0].spec.settings.http.port
        announce_ready(port, *(worker.own_url for worker in started))

    if workers > 1:
        sys.exit(asyncio.run(supervise(settings, workers, reloadable=False, on_ready=all_ready)))
    sys.exit(asyncio.run(serve(settings, on_ready=lambda daemon: announce_ready(daemon.port))))


if __name__ == "__main__":
    main()
