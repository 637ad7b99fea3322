"""What the dashboard shows: the most recent executions, and the streams that follow them.

Three things feed the board: this daemon's own starts and completions (with the path that
completed them), and the stack's status topics, which report every execution of every
workflow, whoever started it. Each change is sent at once to every open ``/events`` stream;
a new stream first gets everything the board knows.

A stream that cannot keep up (its client stopped reading) is closed rather than allowed to
grow: browsers reconnect by themselves and start again from a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from notifier.requests.waiters import Completion, Status, Transaction

log = logging.getLogger(__name__)

STREAM_BACKLOG = 1000
"""Events queued for one stream before it counts as stalled and is closed."""


@dataclass
class ExecutionView:
    execution_arn: str
    name: str
    state_machine: str
    status: Status
    start_ms: int | None = None
    stop_ms: int | None = None
    route: str | None = None
    """Set for executions this daemon started."""
    completed_via: str | None = None
    """How this daemon learnt of the end: mqtt, sqs, poll or stop."""

    def to_json(self) -> dict[str, Any]:
        duration = None
        if self.start_ms is not None and self.stop_ms is not None:
            duration = max(0, self.stop_ms - self.start_ms)
        return {
            "executionArn": self.execution_arn,
            "name": self.name,
            "stateMachine": self.state_machine,
            "status": str(self.status),
            "startDate": self.start_ms,
            "stopDate": self.stop_ms,
            "durationMs": duration,
            "route": self.route,
            "completedVia": self.completed_via,
        }


@dataclass(frozen=True)
class Event:
    kind: str
    data: Any

    def encode(self) -> bytes:
        """Server-Sent Events framing: one JSON line of data."""
        return f"event: {self.kind}\ndata: {json.dumps(self.data)}\n\n".encode()


@dataclass
class Subscription:
    queue: asyncio.Queue[Event | None]

    async def next(self, timeout: float) -> Event | None:
        """The next event; None once the board closed or this subscriber fell behind.

        Raises TimeoutError when nothing happened for ``timeout`` seconds.
        """
        return await asyncio.wait_for(self.queue.get(), timeout)


class Board:
    def __init__(self, max_executions: int) -> None:
        self.max_executions = max_executions
        self._executions: OrderedDict[str, ExecutionView] = OrderedDict()
        self._streams: set[asyncio.Queue[Event | None]] = set()
        self._approvals: list[dict[str, Any]] = []

    def executions(self) -> list[ExecutionView]:
        """Most recent first."""
        return list(reversed(self._executions.values()))

    def get(self, execution_arn: str) -> ExecutionView | None:
        return self._executions.get(execution_arn)

    # what feeds it

    def tracked(self, txn: Transaction) -> None:
        """This daemon is starting ``txn``'s execution, or a client re-attached to it. When it
        started is left to the status feed, which knows."""
        view = self._view(txn.execution_arn)
        view.route = txn.route
        self._changed(view)

    def resolved(self, txn: Transaction, completion: Completion) -> None:
        """This daemon learnt how ``txn`` ended."""
        view = self._view(txn.execution_arn)
        view.route = txn.route
        view.completed_via = completion.via
        view.status = completion.status
        if view.start_ms is None and txn.started_at is not None:
            view.start_ms = _millis(txn.started_at)
        if view.stop_ms is None:
            view.stop_ms = _millis(completion.stop_date or completion.notified_at)
        self._changed(view)

    def status_changed(self, message: dict[str, Any]) -> None:
        """A status topic message: ``{executionArn, stateMachine, name, status, startDate,
        stopDate}`` (dates in epoch milliseconds). Raises ValueError if it is not one."""
        arn, name = message.get("executionArn"), message.get("name")
        machine = message.get("stateMachine")
        if not all(isinstance(v, str) and v for v in (arn, name, machine)):
            raise ValueError("executionArn, name and stateMachine must be strings")
        status = Status.parse(message.get("status"))
        if status is Status.UNKNOWN:
            raise ValueError(f"unknown status {message.get('status')!r}")
        start_ms, stop_ms = message.get("startDate"), message.get("stopDate")
        for value in (start_ms, stop_ms):
            if value is not None and not isinstance(value, int):
                raise ValueError("startDate and stopDate must be epoch milliseconds")
        assert isinstance(arn, str)
        view = self._view(arn, name, machine)
        if view.status.final and not status.final:
            return  # a late RUNNING never undoes the end
        view.status = status
        view.start_ms = start_ms if start_ms is not None else view.start_ms
        view.stop_ms = stop_ms if stop_ms is not None else view.stop_ms
        self._changed(view)

    def approvals_changed(self, approvals: list[dict[str, Any]]) -> None:
        self._approvals = approvals
        self._broadcast(Event("approvals", approvals))

    # streams

    @contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """A subscription to every change, for the ``with`` block: first the snapshot (the
        executions and pending approvals), then each change as it happens."""
        subscription = Subscription(asyncio.Queue(STREAM_BACKLOG))
        subscription.queue.put_nowait(
            Event("snapshot", [view.to_json() for view in self.executions()])
        )
        subscription.queue.put_nowait(Event("approvals", self._approvals))
        self._streams.add(subscription.queue)
        try:
            yield subscription
        finally:
            self._streams.discard(subscription.queue)

    @property
    def streams(self) -> int:
        return len(self._streams)

    def close(self) -> None:
        """End every stream (the daemon is stopping)."""
        for queue in list(self._streams):
            self._streams.discard(queue)
            _put_last(queue)

    def _view(
        self, execution_arn: str, name: str | None = None, machine: str | None = None
    ) -> ExecutionView:
        view = self._executions.get(execution_arn)
        if view is None:
            parts = execution_arn.split(":")
            view = ExecutionView(
                execution_arn,
                name or parts[-1],
                machine or (parts[-2] if len(parts) > 2 else ""),
                Status.RUNNING,
            )
            self._executions[execution_arn] = view
            while len(self._executions) > self.max_executions:
                self._executions.popitem(last=False)
        return view

    def _changed(self, view: ExecutionView) -> None:
        self._broadcast(Event("execution", view.to_json()))

    def _broadcast(self, event: Event) -> None:
        for queue in list(self._streams):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                log.info("dashboard: closing an event stream whose client stopped reading")
                _put_last(queue)


def _put_last(queue: asyncio.Queue[Event | None]) -> None:
    """Make ``None`` the next thing ``queue`` yields, dropping what is queued."""
    while not queue.empty():
        queue.get_nowait()
    queue.put_nowait(None)


def _millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
