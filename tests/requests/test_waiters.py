import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from notifier.requests.waiters import (
    Completion,
    Registry,
    RegistryFullError,
    Rejection,
    Status,
    Transaction,
)


def txn(n: int) -> Transaction:
    return Transaction(f"t{n}", "hello", f"arn:{n}")


def done(n: int, status: Status = Status.SUCCEEDED, via: str = "mqtt", **kw: Any) -> Completion:
    """A completion of transaction ``t<n>``'s own execution."""
    return Completion(status, via=via, execution_arn=f"arn:{n}", **kw)


async def test_several_waiters_first_resolution_wins() -> None:
    registry = Registry(max_held=10)
    registry.track(txn(1))
    async with registry.hold("t1") as a, registry.hold("t1") as b:
        assert registry.held == 2
        first = done(1, output=1)
        assert registry.resolve("t1", first)
        assert not registry.resolve("t1", done(1, Status.FAILED, via="poll"))
        assert a.result() is first and b.result() is first
    assert registry.held == 0
    assert not registry.resolve("unknown", first)


async def test_cancelled_waiter_is_removed_at_once() -> None:
    registry = Registry(max_held=10)
    registry.track(txn(1))

    async def wait() -> None:
        async with registry.hold("t1") as waiter:
            await waiter

    task = asyncio.create_task(wait())
    await asyncio.sleep(0)
    assert registry.held == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert registry.held == 0
    t1 = registry.get("t1")
    assert t1 is not None and not t1.waiters


async def test_capacity() -> None:
    registry = Registry(max_held=1)
    registry.track(txn(1))
    async with registry.hold("t1"):
        with pytest.raises(RegistryFullError):
            registry.check_capacity()
    registry.check_capacity()


async def test_never_grows_without_bound() -> None:
    registry = Registry(max_held=10, max_recent=100)
    for n in range(10_000):
        registry.track(txn(n))
        async with registry.hold(f"t{n}"):
            pass
    assert len(registry) == 100
    assert registry.get("t9999") is not None and registry.get("t0") is None


async def test_release_all_answers_current_and_later_waiters() -> None:
    registry = Registry(max_held=10)
    registry.track(txn(1))
    async with registry.hold("t1") as waiter:
        assert registry.release_all() == 1
        assert waiter.result() is None
        async with registry.hold("t1") as later:
            assert later.result() is None
    await asyncio.wait_for(registry.wait_empty(), 1)


async def test_resolved_before_holding() -> None:
    registry = Registry(max_held=10)
    registry.track(txn(1))
    aborted = done(1, Status.ABORTED, via="stop")
    registry.resolve("t1", aborted)
    async with registry.hold("t1") as waiter:
        assert waiter.result() is aborted


async def test_only_the_transactions_own_execution_resolves_it() -> None:
    registry = Registry(max_held=10)
    rejected: list[tuple[str, str | None, Rejection]] = []
    registry.on_rejected.append(lambda t, c, reason: rejected.append((t.txn_id, c.via, reason)))
    registry.track(txn(1))
    async with registry.hold("t1") as waiter:
        forged = Completion(Status.SUCCEEDED, via="mqtt", execution_arn="arn:other", output=0)
        assert not registry.resolve("t1", forged)
        assert not registry.resolve("t1", Completion(Status.SUCCEEDED, via="sqs"))
        assert not waiter.done()
        assert rejected == [
            ("t1", "mqtt", Rejection.OTHER_EXECUTION),
            ("t1", "sqs", Rejection.NO_EXECUTION_ARN),
        ]
        own = done(1, output=1)
        assert registry.resolve("t1", own)
        assert waiter.result() is own


def test_every_authentic_delivery_is_heard() -> None:
    registry = Registry(max_held=10)
    heard: list[tuple[str, bool]] = []
    registry.on_delivered.append(lambda t, c, first: heard.append((c.via, first)))
    t1 = registry.track(txn(1))
    registry.resolve("t1", done(1, via="sqs"))
    registry.resolve("t1", done(1, via="mqtt"))
    registry.resolve("t1", Completion(Status.SUCCEEDED, via="poll", execution_arn="arn:2"))
    assert heard == [("sqs", True), ("mqtt", False)]
    assert t1.heard_via == {"sqs", "mqtt"} and t1.completion is not None
    assert t1.completion.via == "sqs"


async def test_results_kept_are_bounded_by_bytes_too() -> None:
    registry = Registry(max_held=10, max_recent=1000, max_recent_bytes=10_000)
    for n in range(100):
        registry.track(txn(n))
        async with registry.hold(f"t{n}"):
            registry.resolve(f"t{n}", done(n, size=1000))
        assert registry.recent_bytes <= 10_000
    assert len(registry) == 10 and registry.recent_bytes == 10_000
    assert registry.get("t99") is not None and registry.get("t89") is None
    # A result that arrives after the 202, while nobody waits, counts as well.
    registry.track(txn(100))
    registry.resolve("t100", done(100, size=5000))
    assert registry.recent_bytes <= 10_000 and registry.get("t100") is not None


async def test_each_transaction_forgotten_is_told_once() -> None:
    registry = Registry(max_held=10, max_recent=2)
    forgotten: list[str] = []
    registry.on_forgotten.append(forgotten.append)
    for n in range(4):
        registry.track(txn(n))
    assert forgotten == ["t0", "t1"]  # evicted, the oldest first
    async with registry.hold("t3"):
        registry.discard("t3")  # an execution that never started
    registry.discard("t3")
    assert forgotten == ["t0", "t1", "t3"] and registry.get("t3") is None


@pytest.mark.parametrize(
    ("raw", "status", "final"),
    [
        ("SUCCEEDED", Status.SUCCEEDED, True),
        ("ABORTED", Status.ABORTED, True),
        ("RUNNING", Status.RUNNING, False),
        ("PENDING_REDRIVE", Status.PENDING_REDRIVE, False),
        ("PAUSED_FOR_LUNCH", Status.UNKNOWN, False),
        (None, Status.UNKNOWN, False),
        (7, Status.UNKNOWN, False),
    ],
)
def test_statuses_are_parsed_in_one_place_and_never_raise(
    raw: object, status: Status, final: bool
) -> None:
    parsed = Status.parse(raw)
    assert parsed is status and parsed.final is final


async def test_stale_transactions_are_held_ones_not_asked_about_for_a_while() -> None:
    registry = Registry(max_held=10)
    t1, _ = registry.track(txn(1)), registry.track(txn(2))
    t1.tracked_at -= 60
    async with registry.hold("t1"), registry.hold("t2"):
        assert [t.txn_id for t in registry.stale(30)] == ["t1"]
        assert sorted(t.txn_id for t in registry.stale(0)) == ["t1", "t2"]
    assert list(registry.stale(0)) == []  # nobody waits any more


async def test_a_redriven_transaction_waits_for_its_new_end() -> None:
    registry = Registry(max_held=10)
    arn = "arn:aws:states:us-east-1:1:execution:m:t1"
    registry.track(Transaction("t1", "r", arn))
    first_end = datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    failed = Completion(Status.FAILED, "mqtt", execution_arn=arn, stop_date=first_end)
    assert registry.resolve("t1", failed)
    registry.reopen("t1")
    async with registry.hold("t1") as waiter:
        assert not waiter.done()
        # The first run's end, arriving late by another path, is not the new one.
        assert not registry.resolve("t1", dataclasses.replace(failed, via="sqs"))
        assert not waiter.done()
        new_end = dataclasses.replace(
            failed, status=Status.SUCCEEDED, stop_date=first_end + timedelta(seconds=5)
        )
        assert registry.resolve("t1", new_end)
        assert (await waiter) is new_end
