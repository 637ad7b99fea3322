"""keep_trying: the loop behind every source that must outlive what fails."""

from __future__ import annotations

import asyncio
import logging

import pytest

from notifier.lifecycle import keep_trying


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
