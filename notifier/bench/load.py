"""The HTTP load: Hello requests, each checked and timed when its whole answer is read.

Every request carries its own ``benchId``; an answer counts as correct only if it is
``200 SUCCEEDED`` and its output carries that id back with the Hello greeting.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from notifier.local.sfn_standin import HELLO_RESULT

ROUTE = "hello"
# Each request's share of file descriptors in this process: its socket, with room to spare.
FDS_PER_REQUEST = 1.2
FD_RESERVE = 512


class LoadError(Exception):
    pass


@dataclass(frozen=True)
class Sample:
    index: int
    status: int
    """HTTP status, 0 when no answer came."""
    ok: bool
    received_at: float
    """Wall clock (``time.time()``) when the whole answer had been read."""
    txn_id: str | None = None
    via: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class LoadRun:
    """One :func:`closed_loop`, as :mod:`notifier.bench.load_process` is told it."""

    url: str
    requests: int
    concurrency: int
    wait: float
    hold: float
    first_index: int = 0


@dataclass(frozen=True)
class LoadResult:
    samples: list[Sample]
    began: float
    """Wall clock when the first client started."""
    ended: float
    """Wall clock when the last answer had been read."""

    @property
    def elapsed_s(self) -> float:
        return self.ended - self.began


def client(connections: int) -> aiohttp.ClientSession:
    """A session that opens as many connections as there are requests in flight."""
    ensure_fd_limit(connections)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout)


def ensure_fd_limit(connections: int) -> int:
    """Raise this process's soft open-files limit (inherited by the daemon) to fit
    ``connections`` sockets; a hard limit too low for that is an error."""
    wanted = int(connections * FDS_PER_REQUEST) + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    if hard != resource.RLIM_INFINITY and hard < wanted:
        raise LoadError(
            f"{connections} connections need about {wanted} open files, but the hard limit "
            f"is {hard}: raise it (ulimit -Hn, or LimitNOFILE for a service) or use fewer"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


async def send(
    http: aiohttp.ClientSession, url: str, index: int, wait: float, hold: float
) -> Sample:
    # A whole number as an integer: a Wait state's SecondsPath wants one.
    body = {"waitSeconds": int(wait) if wait == int(wait) else wait, "benchId": index}
    headers = {"Prefer": f"wait={hold:g}"}
    try:
        async with http.post(f"{url}/{ROUTE}", json=body, headers=headers) as response:
            raw = await response.read()
            received_at = time.time()
            status = response.status
    except (aiohttp.ClientError, OSError) as exc:
        return Sample(index, 0, False, time.time(), error=f"{type(exc).__name__}: {exc}")
    try:
        answer: Any = json.loads(raw)
    except json.JSONDecodeError:
        return Sample(index, status, False, received_at, error="the answer is not JSON")
    output = answer.get("output") if isinstance(answer, dict) else None
    ok = (
        status == 200
        and answer.get("status") == "SUCCEEDED"
        and isinstance(output, dict)
        and output.get("benchId") == index
        and output.get("taskresult") == HELLO_RESULT
    )
    return Sample(
        index,
        status,
        ok,
        received_at,
        txn_id=answer.get("transactionId"),
        via=answer.get("completedVia"),
        error=None if ok else f"{status} {answer.get('status') or answer.get('message')}",
    )


async def closed_loop(
    http: aiohttp.ClientSession,
    url: str,
    *,
    requests: int,
    concurrency: int,
    wait: float,
    hold: float,
    first_index: int = 0,
) -> list[Sample]:
    """``requests`` requests from ``concurrency`` clients, each sending its next one as soon
    as it has its answer. The clients start evenly spread over one workflow's ``wait``, so
    that requests arrive steadily rather than in waves of ``concurrency`` at once."""
    indexes = iter(range(first_index, first_index + requests))
    samples: list[Sample] = []
    clients = min(concurrency, requests)

    async def one_client(delay: float) -> None:
        await asyncio.sleep(delay)
        for index in indexes:
            samples.append(await send(http, url, index, wait, hold))

    await asyncio.gather(*(one_client(wait * i / clients) for i in range(clients)))
    return samples


async def hold_all(
    http: aiohttp.ClientSession,
    url: str,
    *,
    requests: int,
    started: Callable[[], int],
    hold: float,
    batch: int = 250,
    timeout: float = 120.0,
) -> list[asyncio.Task[Sample]]:
    """Open ``requests`` requests that stay held, ``batch`` at a time: each batch once the
    executions of the previous one have started (``started()`` counts them). Returns the
    requests' tasks once all have started."""
    tasks: list[asyncio.Task[Sample]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for first in range(0, requests, batch):
        for index in range(first, min(first + batch, requests)):
            tasks.append(loop.create_task(send(http, url, index, 0, hold)))
        while started() < len(tasks):
            if loop.time() > deadline or any(t.done() for t in tasks[-batch:]):
                done = [t.result() for t in tasks if t.done()]
                reason = next((s.error for s in done if s.error), "too slow")
                for task in tasks:
                    task.cancel()
                raise LoadError(f"only {started()} of {len(tasks)} requests were held: {reason}")
            await asyncio.sleep(0.01)
    return tasks
