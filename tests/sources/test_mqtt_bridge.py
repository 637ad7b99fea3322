"""The bridge from awscrt's threads to the event loop: every message of a connection reaches
its handler in the loop, in the order received, however many arrive before the loop takes
them; those that do arrive together are taken in one turn of the loop. A wait for one of
awscrt's futures that gives up leaves the future for awscrt to complete."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pytest

from notifier.sources.mqtt.bridge import ThreadBridge, outcome
from tests.support.eventually import eventually


class FakeConnection:
    """What the bridge uses of an awscrt connection: the message callback it is given."""

    def __init__(self) -> None:
        self.on_message_callback: Callable[..., None] | None = None

    def on_message(self, callback: Callable[..., None]) -> None:
        self.on_message_callback = callback

    def receive(self, topic: str, payload: bytes) -> None:
        """As awscrt calls it, from one of its threads."""
        assert self.on_message_callback is not None
        self.on_message_callback(topic=topic, payload=payload, dup=False, qos=1, retain=False)


async def test_every_message_reaches_the_handler_in_the_order_received() -> None:
    bridge, connection = ThreadBridge(asyncio.get_running_loop()), FakeConnection()
    got: list[tuple[str, bytes]] = []
    activity = bridge.deliver_messages(connection, lambda t, p: got.append((t, p)))
    sent = [(f"root/unit/{n}", str(n).encode()) for n in range(2000)]

    def awscrt_thread() -> None:
        for n, (topic, payload) in enumerate(sent):
            connection.receive(topic, bytearray(payload))
            if n % 50 == 0:
                time.sleep(0.001)  # some arrive alone, some while others wait

    thread = threading.Thread(target=awscrt_thread)
    thread.start()
    await eventually(lambda: len(got) == len(sent))
    thread.join()
    assert got == sent
    assert activity.last_message_at <= asyncio.get_running_loop().time()


async def test_messages_that_arrive_together_are_taken_in_one_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    wakes: list[Any] = []
    call_soon_threadsafe = loop.call_soon_threadsafe

    def counted(callback: Callable[..., Any], *args: Any) -> asyncio.Handle:
        wakes.append(callback)
        return call_soon_threadsafe(callback, *args)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
    bridge, connection = ThreadBridge(loop), FakeConnection()
    got: list[str] = []
    bridge.deliver_messages(connection, lambda t, p: got.append(t))
    # The loop is busy (here: blocked) while five arrive.
    thread = threading.Thread(target=lambda: [connection.receive(f"t{n}", b"{}") for n in range(5)])
    thread.start()
    thread.join()
    await eventually(lambda: len(got) == 5)
    assert got == ["t0", "t1", "t2", "t3", "t4"] and len(wakes) == 1
    connection.receive("t5", b"{}")  # alone: a turn of its own
    await eventually(lambda: len(got) == 6)
    assert len(wakes) == 2


async def test_a_handler_that_raises_loses_none_of_the_messages_after_it() -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda loop, context: errors.append(context))
    try:
        bridge, connection = ThreadBridge(loop), FakeConnection()
        got: list[str] = []

        def handler(topic: str, payload: bytes) -> None:
            if topic == "t1":
                raise RuntimeError("a bug")
            got.append(topic)

        bridge.deliver_messages(connection, handler)
        for n in range(4):
            connection.receive(f"t{n}", b"{}")
        await eventually(lambda: len(got) == 3)
        assert got == ["t0", "t2", "t3"]
        assert [str(context.get("exception")) for context in errors] == ["a bug"]
    finally:
        loop.set_exception_handler(None)


async def test_a_wait_that_gives_up_leaves_the_future_for_awscrt_to_complete() -> None:
    suback: Future[dict[str, Any]] = Future()  # as awscrt's subscribe returns it
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await outcome(suback)
    assert not suback.cancelled()
    completed: list[BaseException | None] = []

    def awscrt_thread() -> None:
        try:
            suback.set_result({"qos": 1})  # what awscrt does once the broker answers
        except BaseException as exc:  # InvalidStateError, had the wait cancelled it
            completed.append(exc)
        else:
            completed.append(None)

    thread = threading.Thread(target=awscrt_thread)
    thread.start()
    thread.join()
    assert completed == [None]
