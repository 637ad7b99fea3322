"""keep_trying and BackgroundTasks, the loops behind every part that must outlive what
fails; and the READY handshake of child processes."""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest

from notifier.lifecycle import (
    BackgroundTasks,
    Health,
    NotReadyError,
    full_jitter,
    keep_trying,
    terminate,
    wait_ready,
)


async def test_failures_are_reported_backed_off_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcomes: list[Exception | None] = [OSError("down"), KeyError("bug"), None, OSError("again")]
    failures: list[Exception] = []
    done = asyncio.Event()

    async def step() -> None:
        if not outcomes:
            done.set()
            await asyncio.Event().wait()  # idle until cancelled
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    task = asyncio.ensure_future(
        keep_trying(step, failures.append, expected=(OSError,), retry_min=0.001, retry_max=0.002)
    )
    with caplog.at_level(logging.ERROR, logger="notifier.lifecycle"):
        await asyncio.wait_for(done.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [str(f) for f in failures] == ["down", "'bug'", "again"]
    # Only the unexpected one is logged with its traceback.
    assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [KeyError]


async def child(code: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
    )


async def test_a_child_says_ready_with_where_it_listens() -> None:
    process = await child(
        "from notifier.lifecycle import announce_ready; announce_ready('127.0.0.1', 4321)"
    )
    assert await wait_ready(process, 30) == ["127.0.0.1", "4321"]
    assert await process.wait() == 0


async def test_a_child_that_says_something_else_or_nothing_is_not_ready() -> None:
    process = await child("print('ERROR cannot listen on 127.0.0.1:1: in use')")
    with pytest.raises(NotReadyError) as refused:
        await wait_ready(process, 30)
    assert refused.value.line == "ERROR cannot listen on 127.0.0.1:1: in use"
    await process.wait()

    process = await child("raise SystemExit(3)")
    with pytest.raises(NotReadyError) as exited:
        await wait_ready(process, 30)
    assert exited.value.line == ""
    assert await process.wait() == 3

    process = await child("import time; time.sleep(60)")
    try:
        with pytest.raises(NotReadyError) as silent:
            await wait_ready(process, 0.2)
        assert silent.value.line is None
    finally:
        await terminate(process, 5)


async def test_background_tasks_are_named_restarted_and_stopped_together(
    caplog: pytest.LogCaptureFixture,
) -> None:
    turns = 0

    async def breaks_on_the_second_turn() -> None:
        nonlocal turns
        turns += 1
        if turns == 2:
            raise ValueError("the inner call broke")
        await asyncio.sleep(0.001)

    ran_once = asyncio.Event()

    async def once() -> None:
        ran_once.set()
        raise ValueError("a one-off failed")

    tasks = BackgroundTasks()
    with caplog.at_level(logging.ERROR, logger="notifier.lifecycle"):
        loop = tasks.start("a-loop", breaks_on_the_second_turn, retry_min=0.001)
        tasks.once("a-one-off", once())
        async with asyncio.timeout(10):
            while turns < 5:  # noqa: ASYNC110 (counts turns of a loop that has no event)
                await asyncio.sleep(0.001)
            await ran_once.wait()
        assert loop.get_name() == "a-loop" and tasks.running("a-loop")
        await tasks.stop()
    assert loop.cancelled() and tasks.names == []
    logged = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("a-loop failed; retrying") for m in logged)
    assert "a-one-off failed" in logged


async def test_every_calls_its_work_again_and_again_and_goes_on_after_a_failure() -> None:
    calls: list[float] = []
    failures: list[Exception] = []
    enough = asyncio.Event()

    async def work() -> None:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) == 2:
            raise OSError("once")
        if len(calls) == 4:
            enough.set()

    tasks = BackgroundTasks()
    tasks.every("ticking", 0.001, work, failures.append, at_once=True)
    await asyncio.wait_for(enough.wait(), 10)
    await tasks.stop()
    assert [str(f) for f in failures] == ["once"]
    assert tasks.names == []


def test_health_logs_a_failure_once_and_its_recovery_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health = Health("the queue")
    with caplog.at_level(logging.INFO, logger="notifier.lifecycle"):
        health.works()
        for _ in range(3):
            health.failed(OSError("down"))
        assert health.error == "down"
        health.failed(OSError("still down, otherwise"))
        health.works()
        health.works()
    assert health.error is None
    assert [r.getMessage() for r in caplog.records] == [
        "the queue: down; retrying",
        "the queue: still down, otherwise; retrying",
        "the queue works again",
    ]


def test_full_jitter_draws_anywhere_below_its_bound() -> None:
    waits = [full_jitter(2.0) for _ in range(1000)]
    assert all(0 <= wait <= 2.0 for wait in waits)
    assert min(waits) < 0.5 and max(waits) > 1.5
