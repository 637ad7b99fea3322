"""The one shape of every long-lived part: ``start``/``stop``, used as ``async with``; the
loop that keeps a part's work going whatever fails; how a served process waits for its next
instruction; and how a child process is started and stopped."""

from __future__ import annotations

import asyncio
import logging
import pickle
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import IO, Self

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


async def stop_or_reload(stop: asyncio.Event, reload_requested: asyncio.Event) -> str:
    """``stop`` or ``reload``, whichever is asked for first (stop wins a tie)."""
    waits = {
        asyncio.ensure_future(stop.wait()): "stop",
        asyncio.ensure_future(reload_requested.wait()): "reload",
    }
    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    if stop.is_set():
        return "stop"
    reload_requested.clear()
    return "reload"


async def start_python(
    module: str,
    given: object,
    env: Mapping[str, str],
    stderr: IO[bytes] | None = None,
) -> asyncio.subprocess.Process:
    """``python -m module`` with ``given`` pickled on its standard input (then closed), and
    its standard output a pipe."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        env=dict(env),
    )
    assert process.stdin is not None
    process.stdin.write(pickle.dumps(given))
    process.stdin.close()
    return process
