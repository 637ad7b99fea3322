"""The daemon's lifecycle: completion sources, AWS clients and the HTTP server, then draining."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping

from aiohttp import web

from notifier import routes
from notifier.app.state import ADMISSION, REGISTRY, SETTINGS
from notifier.app.wiring import create_app
from notifier.app.wiring import reload as reload_app
from notifier.aws.errors import AwsError
from notifier.config import AwsSettings, ConfigError, Settings
from notifier.dashboard import web as dashboard
from notifier.identity import instance_id
from notifier.lifecycle import Service, stop_or_reload
from notifier.logs import set_level
from notifier.ops.gc_schedule import ScheduledCollection
from notifier.ops.systemd import SystemdNotifier, Watchdog
from notifier.requests.waiters import Registry
from notifier.sources.mqtt import MqttConnectError
from notifier.tracing import Tracing

log = logging.getLogger(__name__)


class Daemon(Service):
    """Async context manager: the daemon serving HTTP on ``settings.http`` until exit.

    ``aws`` defaults to ``settings.aws``. With ``settings.http.port = 0`` the bound port is
    :attr:`port` once entered. ``reuse_port`` shares the port with other processes that ask
    for it too (SO_REUSEPORT: the kernel spreads connections over them); ``own_port`` is a
    second port that only this daemon listens on (0: a free one; :attr:`own_url`).
    ``tracing`` defaults to what ``settings.tracing`` says.
    """

    def __init__(
        self,
        settings: Settings,
        aws: AwsSettings | None = None,
        *,
        reuse_port: bool = False,
        own_port: int | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.aws = aws or settings.aws
        self._reuse_port = reuse_port
        self._own_port = own_port
        self.instance_id, self._instance_id_origin = instance_id(
            settings.daemon.instance_id, settings.http.port
        )
        self.app = create_app(
            settings,
            self.aws,
            self.instance_id,
            routes.table(settings.dashboard.enabled),
            tracing,
        )
        if settings.dashboard.enabled:
            dashboard.install(self.app)
        # handler_cancellation: a client that disconnects cancels its handler, which
        # removes its waiter at once.
        self._runner = web.AppRunner(
            self.app, handler_cancellation=True, shutdown_timeout=5.0, access_log=None
        )
        self._site: web.TCPSite | None = None
        self._own_site: web.TCPSite | None = None
        self._drained = False

    @property
    def registry(self) -> Registry:
        return self.app[REGISTRY]

    @property
    def port(self) -> int:
        assert self._site is not None, "the daemon is not running"
        return self._site.port

    @property
    def url(self) -> str:
        return f"http://{self.settings.http.host}:{self.port}"

    @property
    def own_url(self) -> str | None:
        if self._own_site is None:
            return None
        return f"http://{self.settings.http.host}:{self._own_site.port}"

    async def start(self) -> None:
        if self.settings.daemon.instance_id is None:
            log.info("instance id (%s): %s", self._instance_id_origin, self.instance_id)
        await self._runner.setup()
        host = self.settings.http.host
        try:
            self._site = web.TCPSite(
                self._runner, host, self.settings.http.port, reuse_port=self._reuse_port or None
            )
            await self._site.start()
            if self._own_port is not None:
                self._own_site = web.TCPSite(self._runner, host, self._own_port)
                await self._own_site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        also = f" and {self.own_url}" if self._own_site is not None else ""
        log.info("notifier %s listening on %s%s", self.instance_id, self.url, also)

    async def stop(self) -> None:
        await self.drain(0)
        await self._runner.cleanup()

    def reload(self, settings: Settings) -> list[str]:
        """Routes, limits, API keys and log level from ``settings``; returns what needs a
        restart instead."""
        ignored = reload_app(self.app, settings)
        self.settings = self.app[SETTINGS].current
        set_level(self.settings.daemon.log_level)
        return ignored

    async def drain(self, grace: float | None = None) -> None:
        """Stop accepting; give held requests ``grace`` s (default ``http.drain_timeout``)
        to complete, then answer the rest 202 with their Location. Executions keep running."""
        if self._drained:
            return
        self._drained = True
        grace = self.settings.http.drain_timeout if grace is None else grace
        self.app[ADMISSION].accepting = False
        for site in (self._site, self._own_site):
            if site is not None:
                await site.stop()
        registry = self.registry
        if registry.held:
            log.info("draining: %d held requests, up to %.0f s", registry.held, grace)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(registry.wait_empty(), grace)
        if released := registry.release_all():
            log.info("draining: answered %d still-running requests with 202", released)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(registry.wait_empty(), 5)


async def serve(
    settings: Settings,
    aws: AwsSettings | None = None,
    *,
    stop: asyncio.Event | None = None,
    reload_settings: Callable[[], Settings] | None = None,
    on_ready: Callable[[Daemon], None] | None = None,
    port_hint: str = "[http] port or NOTIFIER_HTTP_PORT",
    env: Mapping[str, str] = os.environ,
    systemd: SystemdNotifier | None = None,
    reuse_port: bool = False,
    own_port: int | None = None,
) -> int:
    """Run the daemon until SIGTERM/SIGINT (or until ``stop`` is set, when given), then drain.

    Tells systemd (when it runs us; or ``systemd``, whatever listens instead) READY once
    serving, feeds its watchdog from the loop, and says STOPPING on the way out. SIGHUP
    re-reads the configuration through ``reload_settings``: routes, limits, API keys and log
    level change in place. ``on_ready`` is called once the daemon serves; ``reuse_port`` and
    ``own_port`` are :class:`Daemon`'s. Returns the process exit status; a startup failure is
    logged as one line (naming ``port_hint`` for a taken port) and gives 1.
    """
    loop = asyncio.get_running_loop()
    own_signals = stop is None
    stop = stop or asyncio.Event()
    reload_requested = asyncio.Event()
    handled = []
    if own_signals:
        handled += [(signal.SIGTERM, stop.set), (signal.SIGINT, stop.set)]
    if reload_settings is not None:
        handled.append((signal.SIGHUP, reload_requested.set))
    for signum, handler in handled:
        loop.add_signal_handler(signum, handler)
    systemd = systemd or SystemdNotifier(env)
    try:
        async with (
            Daemon(settings, aws, reuse_port=reuse_port, own_port=own_port) as daemon,
            Watchdog(systemd),
            ScheduledCollection(),
        ):
            systemd.ready(f"serving on {daemon.url}")
            if on_ready is not None:
                on_ready(daemon)
            while await stop_or_reload(stop, reload_requested) == "reload":
                assert reload_settings is not None
                systemd.reloading()
                _reload(daemon, reload_settings)
                systemd.ready(f"serving on {daemon.url}")
            systemd.stopping()
            log.info("stopping: no new requests")
            await daemon.drain()
    except (MqttConnectError, AwsError) as exc:
        log.error("notifier: %s", exc)
        return 1
    except OSError as exc:
        where = f"{settings.http.host}:{settings.http.port}"
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        log.error(
            "notifier: cannot listen on %s: %s (choose another with %s)", where, reason, port_hint
        )
        return 1
    finally:
        for signum, _ in handled:
            loop.remove_signal_handler(signum)
    return 0


def _reload(daemon: Daemon, reload_settings: Callable[[], Settings]) -> None:
    try:
        new = reload_settings()
    except ConfigError as exc:
        log.error("reload refused, the running configuration stays: %s", exc)
        return
    ignored = daemon.reload(new)
    log.info("configuration reloaded: %d routes", len(new.routes))
    if ignored:
        log.warning("reload: %s changed but take effect only after a restart", ", ".join(ignored))
