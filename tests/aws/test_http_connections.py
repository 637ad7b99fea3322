"""Kept-alive connections of the fast path, against small servers that answer as told,
keep or close their connections, break off, or say nothing."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from notifier.aws import http_connections
from notifier.aws.http_connections import (
    ConnectionClosed,
    HttpConnections,
    NotHttp,
    Origin,
)
from tests.support.eventually import eventually
from tests.support.tls import loopback_tls

REQUEST = b"POST /x HTTP/1.1\r\nHost: example\r\nContent-Length: 2\r\n\r\n{}"
OK = b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nETag: "e"\r\n\r\nok'

Conversation = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


@dataclass
class Server:
    origin: Origin
    connections: int = 0
    requests: int = 0
    open_now: int = 0
    most_open: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)


async def read_request(reader: asyncio.StreamReader, server: Server) -> bool:
    """Reads one request (head and its 2-byte body); False at the end of the connection."""
    try:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    server.requests += 1
    return True


def answering_with(*parts: bytes) -> Conversation:
    """Answers every request with ``parts``, each sent on its own."""

    async def conversation(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        while await read_request(reader, server):
            for part in parts:
                writer.write(part)
                await writer.drain()

    return conversation


answering = answering_with(OK)


async def held_until_released(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
) -> None:
    while await read_request(reader, server):
        await server.release.wait()
        writer.write(OK)


@asynccontextmanager
async def serving(
    conversation: Conversation, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    server: Server

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        server.open_now += 1
        server.most_open = max(server.most_open, server.open_now)
        try:
            await conversation(reader, writer, server)
        finally:
            server.open_now -= 1
            writer.close()

    listening = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_context)
    port = listening.sockets[0].getsockname()[1]
    server = Server(Origin(ssl_context is not None, "127.0.0.1", port))
    async with listening:
        yield server


def connections(
    max_connections: int = 10,
    read_timeout: float = 30.0,
    context: ssl.SSLContext | None = None,
) -> HttpConnections:
    async def ssl_context() -> ssl.SSLContext:
        return context or ssl.create_default_context()

    return HttpConnections(
        max_connections=max_connections,
        connect_timeout=30.0,
        read_timeout=read_timeout,
        ssl_context=ssl_context,
    )


async def test_a_connection_is_kept_for_the_next_request() -> None:
    async with serving(answering) as server, connections() as pool:
        answers = [await pool.request(server.origin, REQUEST) for _ in range(3)]
    assert [(a.status, a.headers, a.body) for a in answers] == [
        (200, {"content-length": "2", "etag": '"e"'}, b"ok")
    ] * 3
    assert (server.connections, server.requests, pool.made) == (1, 3, 1)


async def test_an_idle_connection_is_not_kept_past_its_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_connections, "IDLE_SECONDS", 0.0)
    async with serving(answering) as server, connections() as pool:
        for _ in range(2):
            await pool.request(server.origin, REQUEST)
    assert (server.connections, server.requests) == (2, 2)


async def test_a_kept_connection_the_server_closed_unanswered_is_replaced_once() -> None:
    async def answers_once(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        if await read_request(reader, server):
            writer.write(OK)
            await read_request(reader, server)  # then closes without an answer

    async with serving(answers_once) as server, connections() as pool:
        first = await pool.request(server.origin, REQUEST)
        second = await pool.request(server.origin, REQUEST)
    assert (first.status, second.status) == (200, 200)
    # The second request reached the first connection, unanswered, then a new one.
    assert (server.connections, server.requests) == (2, 3)


async def test_an_answer_broken_off_is_raised_and_not_sent_again() -> None:
    async def breaks_off(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        if await read_request(reader, server):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok")
            await writer.drain()

    async with serving(breaks_off) as server, connections() as pool:
        with pytest.raises(ConnectionClosed):
            await pool.request(server.origin, REQUEST)
    assert server.requests == 1


async def test_connection_close_answers_are_not_kept() -> None:
    closing = answering_with(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
    async with serving(closing) as server, connections() as pool:
        for _ in range(2):
            assert (await pool.request(server.origin, REQUEST)).body == b"ok"
    assert (server.connections, server.requests) == (2, 2)


async def test_a_chunked_answer_is_read_whole() -> None:
    chunked = answering_with(
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{"a\r\n',
        b'4\r\n": 1\r\n1\r\n}\r\n0\r\n\r\n',
    )
    async with serving(chunked) as server, connections() as pool:
        answers = [await pool.request(server.origin, REQUEST) for _ in range(2)]
    assert [a.body for a in answers] == [b'{"a": 1}'] * 2
    assert server.connections == 1


async def test_what_is_not_http_is_raised_and_its_connection_dropped() -> None:
    async def garbage_first(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        if await read_request(reader, server):
            writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n" if server.connections == 1 else OK)
            await reader.read()

    async with serving(garbage_first) as server, connections() as pool:
        with pytest.raises(NotHttp):
            await pool.request(server.origin, REQUEST)
        answer = await pool.request(server.origin, REQUEST)
    assert answer.status == 200
    assert server.connections == 2


async def silent(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
) -> None:
    """Reads a request and never answers."""
    await read_request(reader, server)
    await reader.read()


async def test_no_answer_within_the_read_timeout_is_raised() -> None:
    async with serving(silent) as server, connections(read_timeout=0.2) as pool:
        with pytest.raises(TimeoutError):
            await pool.request(server.origin, REQUEST)
        assert not pool._open  # dropped


async def test_each_request_is_timed_from_when_it_was_sent() -> None:
    async with serving(silent) as server, connections(read_timeout=0.5) as pool:
        first = asyncio.create_task(pool.request(server.origin, REQUEST))
        await asyncio.sleep(0.3)
        second = asyncio.create_task(pool.request(server.origin, REQUEST))
        with pytest.raises(TimeoutError):
            await first
        assert not second.done()  # sent later: its time is not up yet
        with pytest.raises(TimeoutError):
            await second
        assert not pool._open
        # The timer goes on for requests sent after the others timed out.
        with pytest.raises(TimeoutError):
            await pool.request(server.origin, REQUEST)


async def test_at_most_max_connections_are_open_at_once() -> None:
    async with serving(held_until_released) as server, connections(max_connections=2) as pool:
        requests = [asyncio.create_task(pool.request(server.origin, REQUEST)) for _ in range(5)]
        await eventually(lambda: server.requests == 2)
        server.release.set()
        answers = await asyncio.gather(*requests)
    assert [a.status for a in answers] == [200] * 5
    assert (server.most_open, pool.made, server.requests) == (2, 2, 5)


async def test_https_trusts_what_the_given_context_trusts(tmp_path: Path) -> None:
    tls = loopback_tls(tmp_path)
    trusting = ssl.create_default_context(cafile=str(tls.ca_file))
    async with serving(answering, tls.served) as server:
        async with connections(context=trusting) as pool:
            assert (await pool.request(server.origin, REQUEST)).body == b"ok"
        async with connections() as pool:  # the system's CAs, which never signed it
            with pytest.raises(ssl.SSLCertVerificationError):
                await pool.request(server.origin, REQUEST)


async def test_an_interim_answer_is_passed_over_for_the_final_one() -> None:
    continuing = answering_with(b"HTTP/1.1 100 Continue\r\n\r\n", OK)
    async with serving(continuing) as server, connections() as pool:
        answers = [await pool.request(server.origin, REQUEST) for _ in range(2)]
    assert [(a.status, a.body) for a in answers] == [(200, b"ok")] * 2
    assert server.connections == 1


async def test_bytes_on_an_idle_connection_are_never_part_of_an_answer() -> None:
    async def speaks_unasked(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        if await read_request(reader, server):
            writer.write(OK)
            if server.connections == 1:  # then the start of a message nobody asked for
                writer.write(b"HTTP/1.1 408 Request Timeout\r\n")
            await reader.read()

    async with serving(speaks_unasked) as server, connections() as pool:
        await pool.request(server.origin, REQUEST)
        await eventually(lambda: server.open_now == 0)  # the client closed it
        answer = await pool.request(server.origin, REQUEST)
    assert (answer.status, answer.body) == (200, b"ok")
    assert server.connections == 2


async def test_closed_while_a_request_is_in_flight_it_connects_no_more() -> None:
    async def answers_the_first_only(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        while await read_request(reader, server):
            if server.requests == 1:
                writer.write(OK)
            else:
                await reader.read()

    async with serving(answers_the_first_only) as server:
        pool = connections()
        await pool.request(server.origin, REQUEST)
        in_flight = asyncio.create_task(pool.request(server.origin, REQUEST))
        await eventually(lambda: server.requests == 2)
        pool.close()
        with pytest.raises(ConnectionClosed):
            await in_flight
    assert (pool.made, pool._open, pool._idle) == (1, set(), {})


async def test_idle_connections_past_their_time_are_closed_oldest_first() -> None:
    async with serving(held_until_released) as server, connections() as pool:
        burst = [asyncio.create_task(pool.request(server.origin, REQUEST)) for _ in range(4)]
        await eventually(lambda: server.requests == 4)
        server.release.set()
        await asyncio.gather(*burst)
        idle = pool._idle[server.origin]
        for connection in idle[:-1]:  # the burst's older three, long idle
            connection.idle_since -= http_connections.IDLE_SECONDS
        await pool.request(server.origin, REQUEST)
        await eventually(lambda: server.open_now == 1)
        assert len(pool._open) == 1


async def test_the_tls_context_is_made_once(tmp_path: Path) -> None:
    tls = loopback_tls(tmp_path)
    made: list[ssl.SSLContext] = []

    async def trusting() -> ssl.SSLContext:
        await asyncio.sleep(0)  # others connect meanwhile
        made.append(ssl.create_default_context(cafile=str(tls.ca_file)))
        return made[-1]

    async with serving(answering, tls.served) as server:
        pool = HttpConnections(
            max_connections=5, connect_timeout=30.0, read_timeout=30.0, ssl_context=trusting
        )
        async with pool:
            answers = await asyncio.gather(
                *(pool.request(server.origin, REQUEST) for _ in range(5))
            )
    assert [a.status for a in answers] == [200] * 5
    assert len(made) == 1
