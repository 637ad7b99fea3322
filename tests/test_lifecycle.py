"""keep_trying and BackgroundTasks: the loops behind every part that must outlive what
fails."""

from __future__ import annotations

import asyncio
import logging

import pytest

from notifier.lifecycle import BackgroundTasks, keep_trying


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
