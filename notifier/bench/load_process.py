"""The closed-loop load in a process of its own, so that the load generator's work does not
share an event loop, or a core, with the broker and the stand-in it is measured against.

The parent hands the child a :class:`~notifier.bench.load.LoadRun` (pickled, on stdin); the
child runs :func:`notifier.bench.load.closed_loop` with its own connections and its own
collection schedule, and writes back a :class:`~notifier.bench.load.LoadResult` (pickled, on
stdout). Each sample's ``received_at`` is this machine's wall clock, as are the stop times the
parent records.
"""

from __future__ import annotations

import asyncio
import os
import pickle  # nosec B403  # the run and its result, between the bench and its own child
import sys
import time

from notifier.bench import load
from notifier.bench.load import LoadResult, LoadRun
from notifier.lifecycle import start_python, terminate
from notifier.ops.gc_schedule import ScheduledCollection


class LoadProcessError(Exception):
    pass


async def closed_loop(run: LoadRun) -> LoadResult:
    """``run`` in a child process; its samples once every request has its answer (each
    request is bounded by its own hold and connect timeouts)."""
    process = await start_python(
        "notifier.bench.load_process", run, {**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        output, _ = await process.communicate()
    except BaseException:
        await terminate(process, 5)
        raise
    if process.returncode != 0 or not output:
        raise LoadProcessError(f"the load process failed (exit status {process.returncode})")
    result = pickle.loads(output)  # nosec B301  # the output of the child started above
    assert isinstance(result, LoadResult)
    return result


async def _run(run: LoadRun) -> LoadResult:
    async with ScheduledCollection(), load.client(run.concurrency) as http:
        began = time.time()
        samples = await load.closed_loop(
            http, run.url, requests=run.requests, concurrency=run.concurrency, wait=run.wait,
            hold=run.hold, first_index=run.first_index,
        )  # fmt: skip
        return LoadResult(samples, began, time.time())


def main() -> None:
    run = pickle.load(sys.stdin.buffer)  # nosec B301  # the parent bench process's own pipe
    result = asyncio.run(_run(run))
    sys.stdout.buffer.write(pickle.dumps(result))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
