"""The one shape of every long-lived part: ``start``/``stop``, used as ``async with``; the
loop that keeps a part's work going whatever fails; and how a child process tells it is
ready and is stopped."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Self

log = logging.getLogger(__name__)


class Service:
    """Subclasses implement ``start`` and ``stop``; ``async with`` runs them around a block."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def keep_trying(
    step: Callable[[], Awaitable[None]],
    failed: Callable[[Exception], None],
    *,
    expected: tuple[type[Exception], ...],
    retry_min: float,
    retry_max: float,
) -> None:
    """Run ``step`` over and over until cancelled. When it raises, ``failed`` is told and the
    next try waits, doubling from ``retry_min`` to ``retry_max`` until a step succeeds; an
    exception not ``expected`` is also logged with its traceback. The loop never dies."""
    delay = retry_min
    while True:
        try:
            await step()
            delay = retry_min
        except expected as exc:
            failed(exc)
        except Exception as exc:
            log.exception("unexpected error in %s", getattr(step, "__qualname__", step))
            failed(exc)
        else:
            continue
        await asyncio.sleep(delay)
        delay = min(delay * 2, retry_max)


READY = "READY"


def announce_ready(*fields: object) -> None:
    """In a child process: tell the parent waiting in :func:`wait_ready` that it serves, with
    ``fields`` (where it listens), as one line ``READY <fields>`` on stdout."""
    print(READY, *fields, flush=True)


class NotReadyError(Exception):
    """A child process said something else than READY, or nothing in time."""

    def __init__(self, line: str | None) -> None:
        super().__init__(f"said {line!r} instead of READY" if line else "did not say READY")
        self.line = line
        """What it said instead ('' when it exited first), None when nothing in time."""


async def wait_ready(process: asyncio.subprocess.Process, timeout: float) -> list[str]:
    """The fields of the ``READY`` line ``process`` prints on its stdout once it serves
    (:func:`announce_ready`), waiting ``timeout`` seconds at most."""
    assert process.stdout is not None, "the process needs stdout=PIPE"
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout)
    except TimeoutError:
        raise NotReadyError(None) from None
    words = line.decode().split()
    if words[:1] != [READY]:
        raise NotReadyError(line.decode().strip())
    return words[1:]


async def terminate(process: asyncio.subprocess.Process | None, timeout: float) -> None:
    """SIGTERM ``process`` if it still runs; SIGKILL it if it has not exited ``timeout``
    seconds later."""
    if process is None or process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
