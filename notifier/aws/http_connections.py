"""Kept-alive HTTP/1.1 connections for the fast path's requests (:mod:`notifier.aws.fast_calls`).

A request is a few hundred bytes of head and a small body, and its answer is read whole; that
is all the fast path needs, and about a third of the CPU a general HTTP client spends on it.
Answers are parsed by httptools (llhttp, the parser of Node.js), chunked ones included.

Each connection carries one request at a time and is kept for the next one while the server
keeps it open (no ``Connection: close``) and it has been idle for less than
:data:`IDLE_SECONDS`. A kept connection that the server closed before any of the answer came
is the one failure that is safe to take for granted: the request is made once more on a new
connection. Every other failure (connecting, a closed or broken answer, no answer within the
read timeout) is raised, and the connection is dropped.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httptools

IDLE_SECONDS = 10.0
"""How long an idle connection is kept: below S3's idle timeout (about 20 s), so that a kept
connection is seldom one the server is closing; the retry on a new connection covers the
rest."""


@dataclass(frozen=True)
class Origin:
    """Where connections go: ``https`` or not, the host to connect to and its port."""

    https: bool
    host: str
    port: int


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    """Names in lower case; a name sent twice keeps its last value."""
    body: bytes


class ConnectionClosed(ConnectionError):
    """The connection closed before the whole answer came."""


class NotHttp(ConnectionError):
    """The server answered with what is not HTTP/1.1."""


class _Connection(asyncio.Protocol):
    """One connection: one request at a time, its answer read whole."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future[Answer] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._keep = True
        self.answer_started = False
        """Some of the current request's answer came."""
        self.idle_since = 0.0

    @property
    def reusable(self) -> bool:
        return self._keep and self._transport is not None and not self._transport.is_closing()

    async def exchange(self, data: bytes, read_timeouts: _ReadTimeouts) -> Answer:
        assert self._transport is not None and self._answer is None
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._answer = answer
        self.answer_started = False
        self._transport.write(data)
        read_timeouts.watch(self, answer)
        try:
            return await answer
        finally:
            self._answer = None

    def time_out(self) -> None:
        """No answer came within the read timeout: raised, and the connection dropped."""
        self._fail(TimeoutError())
        self.close()

    def close(self) -> None:
        self._keep = False
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._answer is None:  # nothing asked: not an answer, nor the start of one
            self.close()
            return
        self.answer_started = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(NotHttp(f"an answer that is not HTTP/1.1: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # the transport closes itself, and connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._keep = False
        self._fail(ConnectionClosed(f"the connection closed before the whole answer: {exc}"))

    # httptools' callbacks

    def on_message_begin(self) -> None:
        if self._answer is None or self._answer.done():  # after the answer, in the same bytes
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self._parser.get_status_code() < 200:  # interim: the final answer follows
            self._headers, self._body = {}, []
            return
        answer = Answer(self._parser.get_status_code(), self._headers, b"".join(self._body))
        self._headers, self._body = {}, []
        if not self._parser.should_keep_alive():
            self._keep = False
        if self._answer is None or self._answer.done():
            self.close()  # an answer nothing asked for: the connection is not to be trusted
        else:
            self._answer.set_result(answer)

    def _fail(self, exc: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)


class _ReadTimeouts:
    """The read timeout of every request in flight, kept with one timer: requests are timed
    from when they are sent, all for the same time, so the first one sent that still waits
    is always the next to time out (rather than a timer of the event loop's each)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._waiting: deque[tuple[float, asyncio.Future[Answer], _Connection]] = deque()
        """When each request times out, its answer and its connection, in the order sent."""
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, connection: _Connection, answer: asyncio.Future[Answer]) -> None:
        """Time ``connection`` out unless ``answer`` is done within the read timeout."""
        loop = asyncio.get_running_loop()
        waiting = self._waiting
        while waiting and waiting[0][1].done():
            waiting.popleft()
        waiting.append((loop.time() + self.seconds, answer, connection))
        if self._timer is None:
            self._timer = loop.call_at(waiting[0][0], self._time_out)

    def _time_out(self) -> None:
        loop = asyncio.get_running_loop()
        now, waiting = loop.time(), self._waiting
        while waiting and (waiting[0][1].done() or waiting[0][0] <= now):
            _, answer, connection = waiting.popleft()
            if not answer.done():
                connection.time_out()
        self._timer = loop.call_at(waiting[0][0], self._time_out) if waiting else None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waiting.clear()


class HttpConnections:
    """At most ``max_connections`` connections, kept per :class:`Origin` for the next request.

    ``ssl_context`` gives the context for HTTPS; it is asked once, when the first HTTPS
    connection is made. An async context manager: leaving it closes every connection.
    """

    def __init__(
        self,
        *,
        max_connections: int,
        connect_timeout: float,
        read_timeout: float,
        ssl_context: Callable[[], Awaitable[ssl.SSLContext]],
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._read_timeouts = _ReadTimeouts(read_timeout)
        self._slots = asyncio.Semaphore(max_connections)
        self._make_ssl_context = ssl_context
        self._ssl_context: ssl.SSLContext | None = None
        self._ssl_lock = asyncio.Lock()
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self.made = 0
        """Connections made so far."""
        self._closed = False

    async def __aenter__(self) -> HttpConnections:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        self._read_timeouts.close()
        for connection in self._open:
            connection.close()
        self._open.clear()
        self._idle.clear()

    async def request(self, origin: Origin, data: bytes) -> Answer:
        """Send ``data`` (a whole HTTP/1.1 request) and read its answer (not for HEAD, whose
        answer has a length and no body)."""
        async with self._slots:
            kept = self._kept(origin)
            if kept is not None:
                try:
                    return await self._exchange(origin, kept, data)
                except ConnectionClosed:
                    if kept.answer_started or self._closed:
                        raise
            if self._closed:
                raise ConnectionClosed("the connections are closed")
            return await self._exchange(origin, await self._connect(origin), data)

    def _kept(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        fresh_since = time.monotonic() - IDLE_SECONDS
        while idle and idle[0].idle_since <= fresh_since:  # the oldest first
            self._drop(idle.pop(0))
        while idle:  # the rest are fresh: the most recently used first
            connection = idle.pop()
            if connection.reusable:
                return connection
            self._drop(connection)
        return None

    async def _connect(self, origin: Origin) -> _Connection:
        context = None
        if origin.https:
            async with self._ssl_lock:  # made once, however many connect at first
                if self._ssl_context is None:
                    self._ssl_context = await self._make_ssl_context()
            context = self._ssl_context
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            # Happy Eyeballs, as the client's own connections: a dual-stack endpoint on a
            # host whose IPv6 is broken connects over IPv4 at once.
            _, connection = await loop.create_connection(
                _Connection,
                origin.host,
                origin.port,
                ssl=context,
                happy_eyeballs_delay=0.25,
                interleave=1,
            )
        self.made += 1
        self._open.add(connection)
        return connection

    async def _exchange(self, origin: Origin, connection: _Connection, data: bytes) -> Answer:
        try:
            answer = await connection.exchange(data, self._read_timeouts)
        except BaseException:
            self._drop(connection)
            raise
        if connection.reusable and not self._closed:
            connection.idle_since = time.monotonic()
            self._idle.setdefault(origin, []).append(connection)
        else:
            self._drop(connection)
        return answer

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)
