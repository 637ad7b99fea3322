"""The board: what the dashboard lists, and how its streams follow it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from notifier.dashboard.board import STREAM_BACKLOG, Board, Event
from notifier.requests.waiters import Completion, Status, Transaction

MACHINE = "arn:aws:states:us-east-1:123456789012:execution:notifier-test-Hello"


def status(name: str, value: str, **dates: int) -> dict[str, Any]:
    return {
        "executionArn": f"{MACHINE}:{name}",
        "stateMachine": "notifier-test-Hello",
        "name": name,
        "status": value,
        **dates,
    }


def drain(board: Board) -> list[Event]:
    """Everything queued for a new subscriber, without waiting."""
    with board.subscribe() as subscription:
        events = []
        while not subscription.queue.empty():
            event = subscription.queue.get_nowait()
            assert event is not None
            events.append(event)
        return events


def test_status_messages_build_executions_and_a_late_running_never_undoes_the_end() -> None:
    board = Board(10)
    board.status_changed(status("a", "RUNNING", startDate=1000))
    board.status_changed(status("a", "SUCCEEDED", startDate=1000, stopDate=1250))
    board.status_changed(status("a", "RUNNING", startDate=1000))
    [view] = board.executions()
    assert view.to_json() == {
        "executionArn": f"{MACHINE}:a",
        "name": "a",
        "stateMachine": "notifier-test-Hello",
        "status": "SUCCEEDED",
        "startDate": 1000,
        "stopDate": 1250,
        "durationMs": 250,
        "route": None,
        "completedVia": None,
    }


@pytest.mark.parametrize(
    "message",
    [
        {},
        {**status("a", "RUNNING"), "status": "SLEEPING"},
        {**status("a", "RUNNING"), "name": 3},
        {**status("a", "RUNNING"), "startDate": "yesterday"},
    ],
)
def test_what_is_not_a_status_message_is_refused(message: dict[str, Any]) -> None:
    board = Board(10)
    with pytest.raises(ValueError):
        board.status_changed(message)
    assert board.executions() == []


def test_own_executions_carry_their_route_and_how_they_completed() -> None:
    board = Board(10)
    txn = Transaction("t1", "hello", f"{MACHINE}:t1")
    board.tracked(txn)
    [view] = board.executions()
    assert (view.route, view.status, view.start_ms) == ("hello", Status.RUNNING, None)
    txn.started_at = datetime(2026, 1, 1, tzinfo=UTC)
    stopped = datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC)
    board.resolved(txn, Completion(Status.FAILED, via="sqs", stop_date=stopped))
    json = view.to_json()
    assert (json["status"], json["completedVia"], json["durationMs"]) == ("FAILED", "sqs", 2000)


def test_only_the_most_recent_executions_are_kept_newest_first() -> None:
    board = Board(3)
    for name in "abcde":
        board.status_changed(status(name, "RUNNING"))
    assert [view.name for view in board.executions()] == ["e", "d", "c"]


def test_a_subscriber_gets_the_snapshot_then_each_change() -> None:
    board = Board(10)
    board.status_changed(status("a", "RUNNING"))
    board.approvals_changed([{"id": "1"}])
    with board.subscribe() as subscription:
        board.status_changed(status("b", "RUNNING"))
        events = [subscription.queue.get_nowait() for _ in range(3)]
    assert [(e.kind, e.data) for e in events if e is not None] == [
        ("snapshot", [board.get(f"{MACHINE}:a").to_json()]),  # type: ignore[union-attr]  # seen above
        ("approvals", [{"id": "1"}]),
        ("execution", board.get(f"{MACHINE}:b").to_json()),  # type: ignore[union-attr]  # seen above
    ]
    assert board.streams == 0
    assert events[2].encode().startswith(b"event: execution\ndata: {")  # type: ignore[union-attr]  # not the end


async def test_a_subscriber_that_stops_reading_is_ended_not_buffered_forever() -> None:
    board = Board(10)
    with board.subscribe() as slow, board.subscribe() as reading:
        for i in range(STREAM_BACKLOG + 5):
            board.status_changed(status(f"x{i}", "RUNNING"))
            assert await reading.next(1) is not None
        assert slow.queue.qsize() <= STREAM_BACKLOG
        assert await slow.next(1) is None
        board.status_changed(status("later", "RUNNING"))
        assert (await reading.next(1)).kind == "execution"  # type: ignore[union-attr]  # not the end


async def test_closing_ends_every_subscription() -> None:
    board = Board(10)
    with board.subscribe() as subscription:
        drained = [await subscription.next(1) for _ in range(2)]
        assert [e.kind for e in drained if e is not None] == ["snapshot", "approvals"]
        board.close()
        assert await subscription.next(1) is None
    assert drain(board)[0].kind == "snapshot"
