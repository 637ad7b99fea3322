"""The pool of MQTT connections a process receives its completions on.

AWS IoT Core lets one connection carry 100 messages a second (not adjustable; counted here
for what is delivered to it, the stricter reading). A process sized for
``peak_completions_per_second`` therefore spreads its completions over as many connections
as that needs, each given ``connection_share`` of the limit (50 a second by default: six
connections at 300 completions a second).

Each connection has its own subtopic, which is how a workflow is told where to notify: the
execution's input carries it. Connection 0 has the instance's own subtopic, ``<instance>``;
connection *n* has ``<instance>/<n>``, so all of them stay under the instance's topics
(``<topic_root>/<instance>/...``, what its token or certificate may subscribe to) and its
queue (the status forwarder sends to the queue named by the subtopic's first level). Each
connection subscribes to ``<topic_root>/<subtopic>/+`` only, so no message is delivered to
two of them. With tokens each connection has its own token, hence its own client id; the
transports without tokens use ``<instance>`` and ``<instance>-<n>``.

:meth:`MqttPool.assign` picks the connection for a new execution: the first subscribed one
that was given fewer executions than its share within the last second, so that the first
connections carry the load and the last ones fall idle. A further connection is opened while
those in service carry half their capacity, so that it is subscribed before its share is
needed; none takes an execution before its subscription is verified. A connection other
than the first closes once none of its executions is held any more and it has been given
none for :data:`IDLE_SECS` (unless the others would need it again at once).

Every connection is watched as the single one used to be: the sweeps describe the held
executions of a connection that is down, or that was down since they started
(:meth:`MqttPool.exposed`), and the liveness check renews the connection that missed one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from notifier.config import AwsSettings, MqttSettings
from notifier.lifecycle import BackgroundTasks, Service
from notifier.requests.waiters import Completion, Registry, Transaction, utcnow
from notifier.sources.mqtt.connections import ConnectSpacing
from notifier.sources.mqtt.pool_connection import WINDOW_SECS, PoolConnection
from notifier.sources.mqtt.rotation import TokenSource
from notifier.sources.mqtt.source import MqttSource
from notifier.token_bucket import TokenBucket
from notifier.topics import connection_subtopic

log = logging.getLogger(__name__)

IOT_MESSAGES_PER_SECOND = 100
"""AWS IoT Core's limit per connection (publishes per second; not adjustable)."""
OPEN_AHEAD = 0.5
"""A further connection is opened once those in service carry this share of their capacity."""
PACE_BURST_SECS = 0.1
"""A connection is given at most this many seconds' worth of its share at once."""
ASSIGN_PATIENCE_SECS = 2.0
"""How long a start that states no patience of its own waits for a connection with room (one
opening, or the rate window moving on) before its execution goes over a connection's share."""
IDLE_SECS = 30.0
"""A connection given nothing for this long, with nothing of it held, is closed."""
UPKEEP_SECS = 1.0
"""How often idle connections are looked for."""


@dataclass(frozen=True)
class _Assignment:
    connection: PoolConnection
    at: datetime
    """When the execution was given to it, before it was started."""


class MqttPool(Service):
    """The connections of one process; :attr:`primary` (connection 0) is always open."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        instance_id: str,
        registry: Registry,
        endpoint: str,
        aws: AwsSettings | None = None,
        tokens: TokenSource | None = None,
        refresh_margin: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        pace_burst_secs: float = PACE_BURST_SECS,
    ) -> None:
        self.settings = settings
        self.pace_burst_secs = pace_burst_secs
        self.instance_id = instance_id
        self.registry = registry
        self.per_connection = max(1, int(IOT_MESSAGES_PER_SECOND * settings.connection_share))
        """Executions a second one connection is given at most while another has room."""
        self.max_connections = max(
            1, math.ceil(settings.peak_completions_per_second / self.per_connection)
        )
        self.opened = 0
        """Connections opened after the first."""
        self.closed = 0
        """Connections closed for being idle."""
        self.overloaded = 0
        """Executions given to a connection over its share, every one being full."""
        self.peaks: dict[int, int] = {}
        """The most messages each connection (by index) received in one second, ever."""
        self._endpoint, self._aws, self._tokens = endpoint, aws, tokens
        self._refresh_margin = refresh_margin
        self.clock = clock
        """Monotonic seconds, for the rates and idle times."""
        self._connects = ConnectSpacing()
        self._connections: dict[int, PoolConnection] = {}
        self._assigned: dict[str, _Assignment] = {}
        self._gone = _Totals()
        """What closed connections had counted."""
        self._closing: set[MqttSource] = set()
        """Closed for being idle, their disconnect under way."""
        self._changed = asyncio.Event()
        self._turns = asyncio.Lock()
        """Held by the start that watches for room; the others wait for it in line."""
        self._in_line = 0
        """Starts waiting for room, the one watching included."""
        self._tasks = BackgroundTasks()
        self.primary = self._add(0).source
        registry.on_resolved.append(self._resolved)
        registry.on_forgotten.append(self._forgotten)

    def subtopic(self, index: int) -> str:
        return connection_subtopic(self.instance_id, index)

    @property
    def connections(self) -> list[PoolConnection]:
        """The open connections (and those opening), by index."""
        return [self._connections[index] for index in sorted(self._connections)]

    async def start(self) -> None:
        await self.primary.start()
        self._tasks.start("MQTT pool upkeep", self._upkeep_once)

    async def stop(self) -> None:
        await self._tasks.stop()  # a disconnect it cancels is made again below
        sources = [c.source for c in self._connections.values()] + list(self._closing)
        self._connections, self._closing = {}, set()
        await asyncio.gather(*(source.stop() for source in sources))

    # Which connection an execution publishes to

    def assign(self, txn_id: str) -> str:
        """The subtopic a new execution for ``txn_id`` is to publish to: the same one for
        the same transaction while its connection is open."""
        known = self._assigned.get(txn_id)
        if known is not None and self._is_open(known.connection):
            return known.connection.subtopic
        now = self.clock()
        return self._give(txn_id, self._choose(now), now)

    def _give(self, txn_id: str, connection: PoolConnection, now: float) -> str:
        connection.assigned_at.append(now)
        if connection.pace is not None:
            connection.pace.spend()
        connection.last_assigned = now
        connection.held.add(txn_id)
        self._assigned[txn_id] = _Assignment(connection, utcnow())
        self._open_ahead(now)
        return connection.subtopic

    async def reserve(self, txn_id: str, patience: float | None = None) -> str:
        """:meth:`assign`, once a subscribed connection has room for one more execution:
        while every one is full, the start waits (for one to open, or for the rate window to
        move on), up to ``patience`` seconds (the time left of its request's wait; None:
        :data:`ASSIGN_PATIENCE_SECS`). So bursts are started no faster than the connections'
        share, rather than have IoT Core discard their completions. With no connection
        subscribed there is nothing to wait for: the queue and the sweeps answer.

        Starts that wait take their turns in the order they came: the first watches the
        connections, the others wait for it to be given one (each within its own patience),
        so that a burst of waiting starts does not wake at every change all at once."""
        now, patience = self.clock(), ASSIGN_PATIENCE_SECS if patience is None else patience
        if txn_id not in self._assigned and not self._in_line:
            subscribed = self._subscribed()
            connection = self._with_room(now, subscribed)
            if connection is not None or not subscribed:  # nothing to wait for
                return self._give(txn_id, connection or self._connections[0], now)
        if txn_id not in self._assigned:
            self._in_line += 1
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(patience), self._turns:
                        await self._until_room(now + patience)
            finally:
                self._in_line -= 1
        return self.assign(txn_id)

    def _room_in(self, now: float) -> float:
        """Seconds until a subscribed connection has room; 0 with none subscribed."""
        subscribed = self._subscribed()
        return min((c.room_in(now, self.per_connection) for c in subscribed), default=0.0)

    async def _until_room(self, deadline: float) -> None:
        while (now := self.clock()) < deadline and (room_in := self._room_in(now)):
            self._open_ahead(now, needed=room_in >= WINDOW_SECS / 2)
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.001, min(room_in, deadline - now))):
                    await changed.wait()

    def adopt(self, txn_id: str, subtopic: str) -> bool:
        """Count ``txn_id``, an execution started earlier with ``subtopic``, as its
        connection's; False if no open connection has that subtopic (while one is down, the
        sweeps cover what it may miss)."""
        for connection in self._connections.values():
            if connection.subtopic == subtopic:
                connection.held.add(txn_id)
                self._assigned[txn_id] = _Assignment(connection, utcnow())
                return True
        return False

    def _subscribed(self) -> list[PoolConnection]:
        return [c for c in self.connections if c.source.connected]

    def _with_room(self, now: float, subscribed: list[PoolConnection]) -> PoolConnection | None:
        """The first of ``subscribed`` that has room now."""
        return next((c for c in subscribed if c.room_in(now, self.per_connection) == 0), None)

    def _choose(self, now: float) -> PoolConnection:
        subscribed = self._subscribed()
        if (connection := self._with_room(now, subscribed)) is not None:
            return connection
        if subscribed:
            self.overloaded += 1
            return min(subscribed, key=lambda c: c.load(now))
        return self._connections[0]  # none is subscribed: the queue and the sweeps answer

    def _open_ahead(self, now: float, needed: bool = False) -> None:
        """Open the next connection once those subscribed carry :data:`OPEN_AHEAD` of their
        share, one at a time; or at once when ``needed`` (every one is full and a start
        waits), another for each start that finds them all full, up to the most."""
        if len(self._connections) >= self.max_connections:
            return
        opening = sum(not c.in_service for c in self._connections.values())
        if opening and not needed:
            return  # one is opening already
        subscribed = [c for c in self._connections.values() if c.source.connected]
        load = sum(c.load(now) for c in subscribed)
        if not needed and load < OPEN_AHEAD * self.per_connection * len(subscribed):
            return
        index = min(set(range(self.max_connections)) - set(self._connections))
        connection = self._add(index)
        self.opened += 1
        log.info("MQTT: opening connection %d (%s) for the rate", index, connection.subtopic)
        self._tasks.once(f"MQTT open {index}", connection.source.start())

    def _add(self, index: int) -> PoolConnection:
        source = MqttSource(
            self.settings,
            instance_id=self.instance_id,
            registry=self.registry,
            endpoint=self._endpoint,
            subtopic=self.subtopic(index),
            client_id=self.instance_id if index == 0 else f"{self.instance_id}-{index}",
            aws=self._aws,
            tokens=self._tokens,
            refresh_margin=self._refresh_margin,
            connects=self._connects,
        )
        pace = TokenBucket(
            self.per_connection, max(1.0, self.per_connection * self.pace_burst_secs), self.clock
        )
        connection = PoolConnection(index, source, self.clock(), pace=pace)
        connection.source.on_connected_changed.append(lambda: self._connection_changed(connection))
        self._connections[index] = connection
        self._notify()
        return connection

    def _is_open(self, connection: PoolConnection) -> bool:
        return self._connections.get(connection.index) is connection

    # Closing idle connections

    async def _upkeep_once(self) -> None:
        await asyncio.sleep(UPKEEP_SECS)
        self.close_idle()

    def close_idle(self) -> list[int]:
        """Close the connections that are idle; returns their indexes."""
        now = self.clock()
        closing = []
        for connection in reversed(self.connections):
            if connection.index == 0 or not self._idle(connection, now):
                continue
            others = [
                c for c in self._connections.values() if c is not connection and c.source.connected
            ]
            if sum(c.load(now) for c in others) >= OPEN_AHEAD * self.per_connection * len(others):
                continue  # it would be opened again at once
            self.peak_per_second()  # kept beyond its closing
            del self._connections[connection.index]
            self._gone.add(connection.source)
            self.closed += 1
            closing.append(connection.index)
            log.info("MQTT: closing idle connection %d (%s)", connection.index, connection.subtopic)
            self._closing.add(connection.source)
            self._tasks.once(f"MQTT close {connection.index}", self._close(connection.source))
        if closing:
            self._forget_closed()
            self._notify()
        return closing

    async def _close(self, source: MqttSource) -> None:
        await source.stop()
        self._closing.discard(source)

    def _idle(self, connection: PoolConnection, now: float) -> bool:
        for txn_id in list(connection.held):
            txn = self.registry.get(txn_id)
            if txn is None or txn.completion is not None or not txn.waiters:
                connection.held.discard(txn_id)
        return not connection.held and now - connection.last_assigned >= IDLE_SECS

    def _forget_closed(self) -> None:
        """Forget which executions closed connections were given."""
        for txn_id, assignment in list(self._assigned.items()):
            if not self._is_open(assignment.connection):
                del self._assigned[txn_id]

    def _forgotten(self, txn_id: str) -> None:
        self._assigned.pop(txn_id, None)

    def _resolved(self, txn: Transaction, completion: Completion) -> None:
        assignment = self._assigned.get(txn.txn_id)
        if assignment is not None:
            assignment.connection.held.discard(txn.txn_id)

    # What the sweeps and the liveness check watch

    @property
    def connected(self) -> bool:
        """Every connection in service (and the first, always) is subscribed."""
        return all(
            c.source.connected for c in self._connections.values() if c.index == 0 or c.in_service
        )

    async def wait_connected(self, value: bool) -> None:
        """Return once :attr:`connected` is ``value``."""
        while self.connected is not value:
            await self._changed.wait()

    def connection_of(self, txn: Transaction) -> MqttSource | None:
        """The connection ``txn``'s execution publishes to, if open (the first for one not
        assigned here)."""
        assignment = self._assigned.get(txn.txn_id)
        if assignment is None:
            return self.primary
        return assignment.connection.source if self._is_open(assignment.connection) else None

    def subtopic_of(self, txn: Transaction) -> str:
        assignment = self._assigned.get(txn.txn_id)
        return assignment.connection.subtopic if assignment is not None else self.instance_id

    def exposed(self, txn: Transaction) -> bool:
        """Whether a completion of ``txn`` may have been published while its connection was
        not subscribed: it is down now, or was subscribed again since ``txn`` started."""
        source = self.connection_of(txn)
        if source is None or source.subscribed_at is None:
            return True
        assignment = self._assigned.get(txn.txn_id)
        since = assignment.at if assignment is not None else txn.started_at
        return since is None or source.subscribed_at > since

    def _connection_changed(self, connection: PoolConnection) -> None:
        if connection.source.connected:
            connection.in_service = True
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # Counts, for /readyz and /metrics

    @property
    def auth_error(self) -> str | None:
        return next((c.source.auth_error for c in self.connections if c.source.auth_error), None)

    @property
    def reconnects(self) -> int:
        return self._gone.reconnects + sum(c.source.reconnects for c in self.connections)

    @property
    def refreshes(self) -> int:
        return self._gone.refreshes + sum(c.source.refreshes for c in self.connections)

    def peak_per_second(self) -> dict[int, int]:
        """The most messages each connection received in one second, by index, since the
        process started."""
        for connection in self.connections:
            peak = self.peaks.get(connection.index, 0)
            self.peaks[connection.index] = max(peak, connection.source.peak_per_second)
        return dict(self.peaks)

    def describe(self) -> Iterator[dict[str, object]]:
        """Each open connection's state, for ``/readyz``."""
        now, peaks = self.clock(), self.peak_per_second()
        for c in self.connections:
            yield {
                "index": c.index,
                "subtopic": c.subtopic,
                "clientId": c.source.client_id,
                "connected": c.source.connected,
                "startedLastSecond": c.load(now),
                "held": len(c.held),
                "received": c.source.received,
                "ignored": c.source.ignored,
                "duplicated": c.source.duplicated,
                "peakMessagesPerSecond": peaks.get(c.index, 0),
            }


@dataclass
class _Totals:
    reconnects: int = 0
    refreshes: int = 0

    def add(self, source: MqttSource) -> None:
        self.reconnects += source.reconnects
        self.refreshes += source.refreshes
