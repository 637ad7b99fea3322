"""``notifier serve --workers N``: N daemons sharing one port, each an instance of its own.

One daemon process carries about one core's worth of requests; workers use the others.
Each worker is a process running the daemon on the configured address with SO_REUSEPORT
(the kernel spreads connections over them) and its instance id suffixed with ``-<k>``
(1..N), so it has its own MQTT subtopic and token and its own completion queue: a held
request is always answered by the worker that holds it. What the configuration states for
the whole instance, its share of the account's Step Functions reads (``sfn_read_rate``),
is divided among them. Each also listens on a port of its
own, the configured port plus k (a free one when the port is 0), where its own ``/metrics``
and ``/readyz`` can be read.

The supervisor (the process systemd started) speaks for all of them: READY once every
worker serves, WATCHDOG only while every worker's event loop turns, RELOADING and READY
around a reload, STOPPING when they drain. SIGTERM, SIGINT and SIGHUP reach every worker.
A worker that exits while the others serve is started again (same instance id, so it finds
its queue); a worker that cannot start at all stops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pickle  # nosec B403  # a worker's settings, from the supervisor over a pipe
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from notifier import identity
from notifier.config import ConfigError, Settings
from notifier.config_loader import load_settings
from notifier.daemon import Daemon, serve
from notifier.lifecycle import BackgroundTasks, start_python, stop_or_reload, terminate
from notifier.ops.systemd import SystemdNotifier

log = logging.getLogger(__name__)

START_TIMEOUT = 120.0
RELOAD_TIMEOUT = 30.0
RESTART_DELAYS = (1.0, 30.0)
"""A worker that exited is started again after a random wait up to the first, the bound
doubling up to the second while it keeps exiting (full jitter)."""
# How systemd reaches the main process alone: workers report to the supervisor instead.
SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
# A notification state of the workers' own: the address only this worker listens on.
OWN_URL = "X_NOTIFIER_OWN_URL"


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process is given (pickled, on its standard input)."""

    index: int
    count: int
    """Workers in all."""
    settings: Settings
    config: Path | None
    reloadable: bool
    """Whether SIGHUP re-reads ``config`` (with the environment), as ``notifier serve`` does."""
    base_instance_id: str
    own_port: int
    watchdog_interval: float | None


def worker_settings(settings: Settings, base_instance_id: str, index: int, count: int) -> Settings:
    """``settings`` for worker ``index`` of ``count``: its instance id is the base one,
    suffixed, and its share of Step Functions reads the instance's divided by ``count``."""
    instance_id = f"{base_instance_id}-{index}"
    if len(instance_id) > 64:
        raise ConfigError(f"[daemon] instance_id: {instance_id!r} is longer than 64 characters")
    prefix = settings.sqs.queue_prefix
    if prefix is not None and len(prefix) + len(instance_id) > 80:
        raise ConfigError(
            f"[sqs] queue_prefix: with the worker's instance id {instance_id!r}, longer than "
            "a queue name may be (80)"
        )
    daemon = dataclasses.replace(
        settings.daemon,
        instance_id=instance_id,
        sfn_read_rate=settings.daemon.sfn_read_rate / count,
        sfn_start_rate=settings.daemon.sfn_start_rate / count,
    )
    return dataclasses.replace(settings, daemon=daemon)


class ToSupervisor(SystemdNotifier):
    """A worker's notifications, one state per line on ``stream``, which the supervisor
    reads instead of systemd."""

    def __init__(self, stream: TextIO, watchdog_interval: float | None) -> None:
        self.address = "supervisor"
        self.watchdog_interval = watchdog_interval
        self._stream = stream

    def notify(self, *states: str) -> None:
        self._stream.write("".join(state.replace("\n", " ") + "\n" for state in states))
        self._stream.flush()


class Worker:
    """One worker process and what it last told the supervisor."""

    def __init__(self, spec: WorkerSpec, env: Mapping[str, str]) -> None:
        self.spec = spec
        self.instance_id = spec.settings.daemon.instance_id or ""
        self._env = dict(env)
        self.process: asyncio.subprocess.Process | None = None
        self.readies = 0
        """READY notifications received from the current process."""
        self.last_watchdog = time.monotonic()
        self.own_url: str | None = None
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> bool:
        """Start the process; True once it serves, False if it exited first."""
        self.readies = 0
        self.own_url = None
        self.last_watchdog = time.monotonic()
        self.process = await start_python("notifier.ops.workers", self.spec, self._env)
        self._reader = asyncio.get_running_loop().create_task(self._read(self.process))
        return await self.wait_ready(0, START_TIMEOUT)

    async def wait_ready(self, readies: int, timeout: float) -> bool:
        """True once more than ``readies`` READY have come (and the worker's own address),
        False if the process exited or ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        while self.readies <= readies or self.own_url is None:
            if not self.running or time.monotonic() > deadline:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - time.monotonic()))
        return True

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signum)

    async def stop(self, timeout: float) -> None:
        await terminate(self.process, timeout)
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            state, _, value = raw.decode(errors="replace").strip().partition("=")
            if state == "READY":
                self.readies += 1
            elif state == "WATCHDOG":
                self.last_watchdog = time.monotonic()
            elif state == OWN_URL:
                self.own_url = value
                # Started again, it listens on the same port of its own.
                own_port = int(value.rpartition(":")[2])
                self.spec = dataclasses.replace(self.spec, own_port=own_port)
            self._changed.set()
        await process.wait()
        self._changed.set()


async def supervise(
    settings: Settings,
    count: int,
    *,
    config: Path | None = None,
    reloadable: bool = True,
    env: Mapping[str, str] = os.environ,
    on_ready: Callable[[list[Worker]], None] | None = None,
) -> int:
    """Run ``count`` workers until SIGTERM/SIGINT, then drain them all; the exit status.

    With ``reloadable``, SIGHUP makes every worker re-read ``config`` and the environment.
    ``on_ready`` is called once all serve."""
    loop = asyncio.get_running_loop()
    systemd = SystemdNotifier(env)
    base_instance_id, _ = identity.instance_id(settings.daemon.instance_id, settings.http.port)
    http = settings.http
    try:
        reserved = _reserve_port(http.host, http.port)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        log.error("notifier: cannot listen on %s:%s: %s", http.host, http.port, reason)
        return 1
    port = reserved.getsockname()[1]
    shared = dataclasses.replace(settings, http=dataclasses.replace(http, port=port))
    child_env = {key: value for key, value in env.items() if key not in SYSTEMD_VARIABLES}
    workers = [
        Worker(
            WorkerSpec(
                index=index,
                count=count,
                settings=worker_settings(shared, base_instance_id, index, count),
                config=config,
                reloadable=reloadable,
                base_instance_id=base_instance_id,
                own_port=http.port + index if http.port else 0,
                watchdog_interval=systemd.watchdog_interval,
            ),
            child_env,
        )
        for index in range(1, count + 1)
    ]
    stop = asyncio.Event()
    reload_requested = asyncio.Event()
    handled = [(signal.SIGTERM, stop.set), (signal.SIGINT, stop.set)]
    if reloadable:
        handled.append((signal.SIGHUP, reload_requested.set))
    for signum, handler in handled:
        loop.add_signal_handler(signum, handler)
    background = BackgroundTasks()
    try:
        with reserved:
            started = await asyncio.gather(*(worker.start() for worker in workers))
        if not all(started):
            failed = [w.instance_id for w, ok in zip(workers, started, strict=True) if not ok]
            log.error("notifier: worker %s did not start", ", ".join(map(str, failed)))
            return 1
        status = f"serving on http://{http.host}:{port} with {count} workers: " + ", ".join(
            f"{worker.instance_id} {worker.own_url}" for worker in workers
        )
        log.info("notifier: %s", status)
        systemd.ready(status)
        if on_ready is not None:
            on_ready(workers)
        for worker in workers:
            background.start(
                f"worker-{worker.instance_id}",
                _kept_running(worker, stop),
                _restarting,
                expected=(WorkerExitedError,),
                retry_min=RESTART_DELAYS[0],
                retry_max=RESTART_DELAYS[1],
            )
        if systemd.watchdog_interval:
            interval = systemd.watchdog_interval
            background.every(
                "watchdog",
                interval,
                lambda: _feed_watchdog(systemd, workers, interval),
                at_once=True,
            )
        while await stop_or_reload(stop, reload_requested) == "reload":
            systemd.reloading()
            await _reload(workers)
            systemd.ready(status)
        systemd.stopping()
        log.info("stopping: %d workers drain", count)
    finally:
        for signum, _ in handled:
            loop.remove_signal_handler(signum)
        stop.set()
        await background.stop()
        grace = settings.http.drain_timeout + 30
        await asyncio.gather(*(worker.stop(grace) for worker in workers))
    return 0


def _reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port`` with SO_REUSEPORT but not listening: it keeps the
    port (a free one for port 0) for the workers until they listen, and fails at once if
    something else has it."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    reserved = socket.socket(family, kind, proto)
    try:
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserved.bind(address)
    except BaseException:
        reserved.close()
        raise
    return reserved


async def _reload(workers: list[Worker]) -> None:
    before = [worker.readies for worker in workers]
    for worker in workers:
        worker.signal(signal.SIGHUP)
    done = await asyncio.gather(
        *(w.wait_ready(n, RELOAD_TIMEOUT) for w, n in zip(workers, before, strict=True))
    )
    for worker, ok in zip(workers, done, strict=True):
        if not ok:
            log.warning("reload: worker %s did not say it is ready again", worker.instance_id)


class WorkerExitedError(Exception):
    """A worker process ended (or did not start) while the supervisor runs."""


def _kept_running(worker: Worker, stop: asyncio.Event) -> Callable[[], Awaitable[None]]:
    """A step for :func:`~notifier.lifecycle.keep_trying` that keeps ``worker`` running: it
    starts the worker if it exited (a successful start resets the backoff) and otherwise
    waits for it to exit, which it raises, so that it is started again after a backoff."""

    async def step() -> None:
        if not worker.running:
            if not await worker.start():
                raise WorkerExitedError(f"worker {worker.instance_id} did not start")
            return
        assert worker.process is not None
        status = await worker.process.wait()
        if stop.is_set():
            await asyncio.get_running_loop().create_future()  # until stopped itself
        raise WorkerExitedError(f"worker {worker.instance_id} exited (status {status})")

    return step


def _restarting(exc: Exception) -> None:
    log.error("%s; starting it again", exc)


def _feed_watchdog(systemd: SystemdNotifier, workers: list[Worker], interval: float) -> None:
    """Feed systemd's watchdog while every worker's loop turns (each pings every
    ``interval``); a stuck worker stops the pings, and systemd restarts the service."""
    now = time.monotonic()
    stuck = [w for w in workers if w.running and now - w.last_watchdog > 2 * interval]
    if stuck:
        log.warning(
            "watchdog: the event loop of worker %s has not turned for %.0f s",
            ", ".join(str(w.instance_id) for w in stuck),
            max(now - w.last_watchdog for w in stuck),
        )
    else:
        systemd.watchdog()


def main() -> None:
    """A worker process: the daemon on the shared port, told what to run by the supervisor."""
    from notifier.logs import setup_logging

    spec: WorkerSpec = pickle.load(sys.stdin.buffer)  # nosec B301  # the supervisor's own pipe
    setup_logging(spec.settings.daemon.log_level)
    notifier = ToSupervisor(sys.stdout, spec.watchdog_interval)

    def reload_settings() -> Settings:
        settings = load_settings(spec.config, os.environ)
        return worker_settings(settings, spec.base_instance_id, spec.index, spec.count)

    def ready(daemon: Daemon) -> None:
        notifier.notify(f"{OWN_URL}={daemon.own_url}")

    status = asyncio.run(
        serve(
            spec.settings,
            reload_settings=reload_settings if spec.reloadable else None,
            on_ready=ready,
            systemd=notifier,
            reuse_port=True,
            own_port=spec.own_port,
        )
    )
    sys.exit(status)


if __name__ == "__main__":
    main()
