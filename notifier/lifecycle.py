"""The one shape of every long-lived part: ``start``/``stop``, used as ``async with``; the
loop that keeps a part's work going whatever fails, and the named background tasks that run
it; how a served process waits for its next instruction; and how a child process is started,
tells it is ready and is stopped."""

from __future__ import annotations

import asyncio
import inspect
import logging
import pickle  # nosec B403  # only dumps, for a child process started here
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping
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
    failed: Callable[[Exception], None] | None = None,
    *,
    expected: tuple[type[Exception], ...] = (),
    retry_min: float = 1.0,
    retry_max: float = 30.0,
    name: str | None = None,
) -> None:
    """Run ``step`` over and over until cancelled. When it raises, ``failed`` is told and the
    next try waits a random time up to a bound that doubles from ``retry_min`` to
    ``retry_max`` until a step succeeds (full jitter: instances that failed together do not
    retry together); an exception not ``expected`` is also logged with its traceback (naming
    the loop ``name``). The loop never dies."""
    delay = retry_min
    what = name or getattr(step, "__qualname__", repr(step))
    while True:
        try:
            await step()
            delay = retry_min
        except expected as exc:
            if failed is not None:
                failed(exc)
        except Exception as exc:
            log.exception("%s failed; retrying within %g s", what, delay)
            if failed is not None:
                failed(exc)
        else:
            continue
        await asyncio.sleep(full_jitter(delay))
        delay = min(delay * 2, retry_max)


def full_jitter(bound: float) -> float:
    """A wait from 0 to ``bound``, evenly drawn."""
    return _RANDOM.uniform(0, bound)


_RANDOM = secrets.SystemRandom()


class Health:
    """Whether one part's work goes well, for ``/readyz`` and the log: :attr:`error` is why
    its last try failed, None while it works. A failure is logged once (again only when the
    reason changes), and so is the recovery."""

    def __init__(self, what: str, logger: logging.Logger = log) -> None:
        self.what = what
        self.error: str | None = None
        self._log = logger

    def works(self) -> None:
        if self.error is not None:
            self._log.info("%s works again", self.what)
            self.error = None

    def failed(self, exc: Exception) -> None:
        message = str(exc)
        if message != self.error:
            self._log.error("%s: %s; retrying", self.what, message)
        self.error = message


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


class BackgroundTasks:
    """The background tasks one part owns: each named, each running its ``step`` over and
    over with :func:`keep_trying`, so that none can die silently; all cancelled by
    :meth:`stop`."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(
        self,
        name: str,
        step: Callable[[], Awaitable[None]],
        failed: Callable[[Exception], None] | None = None,
        *,
        expected: tuple[type[Exception], ...] = (),
        retry_min: float = 1.0,
        retry_max: float = 30.0,
    ) -> asyncio.Task[None]:
        """Run ``step`` over and over in a task called ``name`` (replacing any such task)."""
        previous = self._tasks.pop(name, None)
        if previous is not None:
            previous.cancel()
        loop = keep_trying(
            step, failed, expected=expected, retry_min=retry_min, retry_max=retry_max, name=name
        )
        task = asyncio.get_running_loop().create_task(loop, name=name)
        self._tasks[name] = task
        task.add_done_callback(self._ended)
        return task

    def every(
        self,
        name: str,
        interval: float,
        work: Callable[[], object],
        failed: Callable[[Exception], None] | None = None,
        *,
        at_once: bool = False,
    ) -> asyncio.Task[None]:
        """Call ``work`` every ``interval`` seconds (the first time at once with ``at_once``,
        else after one interval) in a task called ``name``, awaiting what it returns if that
        is awaitable; a failure is told to ``failed`` and the next call waits as in
        :func:`keep_trying`."""
        wait = not at_once

        async def tick() -> None:
            nonlocal wait
            if wait:
                await asyncio.sleep(interval)
            wait = True
            result = work()
            if inspect.isawaitable(result):
                await result

        return self.start(name, tick, failed, retry_min=interval, retry_max=max(interval, 30.0))

    def once(self, name: str, work: Awaitable[None]) -> asyncio.Task[None]:
        """Run ``work`` once in a task called ``name``; an exception it raises is logged."""

        async def logged() -> None:
            try:
                await work
            except Exception:
                log.exception("%s failed", name)

        previous = self._tasks.pop(name, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.get_running_loop().create_task(logged(), name=name)
        self._tasks[name] = task
        task.add_done_callback(self._ended)
        if isinstance(work, Coroutine):  # a task cancelled before it ran never awaited it
            task.add_done_callback(lambda _: work.close())
        return task

    def running(self, name: str) -> bool:
        task = self._tasks.get(name)
        return task is not None and not task.done()

    @property
    def names(self) -> list[str]:
        return [name for name, task in self._tasks.items() if not task.done()]

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self._tasks.get(task.get_name()) is task:
            del self._tasks[task.get_name()]
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s ended", task.get_name(), exc_info=task.exception())


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
