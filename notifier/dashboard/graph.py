"""One execution as a graph: its state machine's definition and what each state did.

The page draws the definition (every state, the branches of Parallel and Map states, Choice
and Catch edges) and colours each state by what the execution's history says of it:

- ``not-reached``: never entered;
- ``running``: entered and not left, while the execution runs;
- ``waiting``: the same, waiting for a task token (``.waitForTaskToken``);
- ``succeeded``: left, its last attempt having succeeded;
- ``caught``: left after its last attempt failed (a ``Catch`` took the error) while the
  execution runs or has succeeded: the error was handled;
- ``failed``: its last attempt failed and the execution failed, or the execution ended
  inside it (a ``Fail`` state, an uncaught error, a timeout, a stop).

Reads go through :class:`~notifier.requests.executions.Executions`, whose DescribeExecution shares
the daemon's rate limit. A finished execution's graph never changes, so it is kept (a few
hundred of them) and asked for again only once evicted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from notifier.config import RouteSettings
from notifier.requests.executions import Executions
from notifier.requests.history import (
    describe_route_execution,
    event_details,
    iso,
    parsed_json,
    redact,
)

HISTORY_LIMIT = 5000
"""Events read for one graph; a longer history is drawn from its first events only."""
FINISHED_KEPT = 256
"""Graphs of finished executions kept, the least recently shown dropped first."""

NOT_REACHED = "not-reached"
RUNNING = "running"
WAITING = "waiting"
SUCCEEDED = "succeeded"
CAUGHT = "caught"
FAILED = "failed"


@dataclass
class StateProgress:
    """What the history says of one state (of its latest entry, when entered again)."""

    entered: bool = False
    exited: bool = False
    last_attempt_failed: bool = False
    waiting_for_token: bool = False
    input: Any = None
    output: Any = None
    error: str | None = None
    cause: str | None = None

    def status(self, execution_status: str) -> str:
        if not self.entered:
            return NOT_REACHED
        if self.exited:
            if not self.last_attempt_failed:
                return SUCCEEDED
            return CAUGHT if execution_status in ("RUNNING", "SUCCEEDED") else FAILED
        if execution_status == "RUNNING":
            return WAITING if self.waiting_for_token else RUNNING
        return FAILED


def state_progress(events: list[dict[str, Any]]) -> dict[str, StateProgress]:
    """Each entered state's progress, from GetExecutionHistory's events in order.

    A state's entry and exit name it. Any other event belongs to the state its
    ``previousEventId`` follows, which sorts out the interleaved events of parallel
    branches; or, when that state has been left, to the innermost state still running that
    encloses it: a Parallel or Map state's own events follow its branches' last ones.
    """
    owner: dict[int, str] = {}
    enclosing: dict[str, str | None] = {}
    progress: dict[str, StateProgress] = {}

    def running(name: str | None) -> str | None:
        while name is not None and progress[name].exited:
            name = enclosing.get(name)
        return name

    for event in events:
        kind = str(event.get("type", ""))
        details: Mapping[str, Any] = event_details(event) or {}
        event_id = int(event.get("id", 0))
        follows = running(owner.get(int(event.get("previousEventId", 0))))
        if kind.endswith("StateEntered"):
            name = str(details.get("name", ""))
            progress[name] = StateProgress(entered=True, input=parsed_json(details.get("input")))
            enclosing[name] = follows
            owner[event_id] = name
            continue
        name_of = str(details["name"]) if kind.endswith("StateExited") else follows
        if name_of is None or name_of not in progress:
            continue
        if kind.startswith("Execution"):
            _record_execution_end(progress[name_of], details)
            continue
        owner[event_id] = name_of
        state = progress[name_of]
        if kind.endswith("StateExited"):
            state.exited = True
            state.waiting_for_token = False
            state.output = parsed_json(details.get("output"))
        elif kind.endswith(("Failed", "TimedOut")):
            state.last_attempt_failed = True
            state.waiting_for_token = False
            state.error, state.cause = details.get("error"), details.get("cause")
        elif kind.endswith("Succeeded"):
            state.last_attempt_failed = False
            state.waiting_for_token = False
        elif kind in ("TaskScheduled", "TaskSubmitted"):
            resource = str(details.get("resource", ""))
            state.waiting_for_token = resource.endswith(".waitForTaskToken")
    return progress


def _record_execution_end(state: StateProgress, details: Mapping[str, Any]) -> None:
    """The execution ended inside ``state`` (a Fail state, an uncaught error)."""
    if not state.exited and state.error is None:
        state.error, state.cause = details.get("error"), details.get("cause")


class ExecutionGraphs:
    """Builds the graph of an execution of one of the daemon's routes, keeping finished
    ones."""

    def __init__(self, executions: Executions, kept: int = FINISHED_KEPT) -> None:
        self._executions = executions
        self._kept = kept
        self._finished: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._definitions: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def graph(
        self, routes: Mapping[str, RouteSettings], execution_arn: str
    ) -> dict[str, Any]:
        """``{executionArn, name, route, status, startDate, stopDate, definition,
        states: {name: {status, input, output, error, cause}}, historyTruncated}``.

        Raises :class:`~notifier.dashboard.details.UnknownExecutionError` for an execution of
        no route, or none at all.
        """
        if (kept := self._finished.get(execution_arn)) is not None:
            self._finished.move_to_end(execution_arn)
            return kept
        route, description = await describe_route_execution(self._executions, routes, execution_arn)
        status = str(description.get("status"))
        definition = await self._definition(execution_arn)
        events, truncated = await self._executions.history(execution_arn, HISTORY_LIMIT)
        states = {
            name: {
                "status": progress.status(status),
                "input": progress.input,
                "output": progress.output,
                "error": progress.error,
                "cause": progress.cause,
            }
            for name, progress in state_progress(events).items()
        }
        graph: dict[str, Any] = redact(
            {
                "executionArn": execution_arn,
                "name": description.get("name"),
                "route": route,
                "status": status,
                "startDate": iso(description.get("startDate")),
                "stopDate": iso(description.get("stopDate")),
                "error": description.get("error"),
                "cause": description.get("cause"),
                "definition": definition,
                "states": states,
                "historyTruncated": truncated,
            }
        )
        if status not in ("RUNNING", "PENDING_REDRIVE"):
            self._keep(self._finished, execution_arn, graph)
        return graph

    async def _definition(self, execution_arn: str) -> dict[str, Any]:
        """The definition the execution runs (an update of the state machine later does
        not change it), kept per execution."""
        if (kept := self._definitions.get(execution_arn)) is not None:
            return kept
        definition = await self._executions.definition_of(execution_arn)
        self._keep(self._definitions, execution_arn, definition)
        return definition

    def _keep(
        self, kept: OrderedDict[str, dict[str, Any]], arn: str, value: dict[str, Any]
    ) -> None:
        kept[arn] = value
        while len(kept) > self._kept:
            kept.popitem(last=False)
