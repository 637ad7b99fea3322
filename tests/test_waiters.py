import asyncio

import pytest

from notifier.waiters import Completion, Registry, RegistryFullError, Status, Transaction


def txn(n: int) -> Transaction:
    return Transaction(f"t{n}", "hello", f"arn:{n}")


async def test_several_waiters_first_resolution_wins() -> None:
    registry = Registry(max_held=10)
    registry.track(txn(1))
    async with registry.hold("t1") as a, registry.hold("t1") as b:
        assert registry.held == 2
        first = Completion(Status.SUCCEEDED, via="mqtt", output=1)
        assert registry.resolve("t1", first)
        assert not registry.resolve("t1", Completion(Status.FAILED, via="poll"))
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
    done = Completion(Status.ABORTED, via="stop")
    registry.resolve("t1", done)
    async with registry.hold("t1") as waiter:
        assert waiter.result() is done
