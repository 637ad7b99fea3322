"""What an execution's graph says of each state, from its history; and the graph and the
charts' numbers as the daemon serves them, against the local stack."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from notifier.dashboard.graph import (
    CAUGHT,
    FAILED,
    NOT_REACHED,
    RUNNING,
    SUCCEEDED,
    WAITING,
    state_progress,
)
from tests.support.daemons import DaemonFactory, call


class History:
    """GetExecutionHistory events, each following the one named (the last by default)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = [
            {"id": 1, "previousEventId": 0, "type": "ExecutionStarted"}
        ]

    def add(self, kind: str, after: int | None = None, **details: Any) -> int:
        event_id = len(self.events) + 1
        key = kind[0].lower() + kind[1:]
        if kind.endswith("StateEntered"):
            key = "stateEntered"
        elif kind.endswith("StateExited"):
            key = "stateExited"
        self.events.append(
            {
                "id": event_id,
                "previousEventId": self.events[-1]["id"] if after is None else after,
                "type": kind,
                f"{key}EventDetails": details,
            }
        )
        return event_id

    def statuses(self, execution_status: str) -> dict[str, str]:
        return {
            name: progress.status(execution_status)
            for name, progress in state_progress(self.events).items()
        }


def lambda_task(history: History, name: str, *results: str, after: int | None = None) -> None:
    history.add("TaskStateEntered", after, name=name, input='{"n": 1}')
    for result in results:
        history.add("LambdaFunctionScheduled")
        history.add("LambdaFunctionStarted")
        history.add(f"LambdaFunction{result}", error="Boom" if result == "Failed" else None)


def test_a_retried_step_that_succeeded_and_the_states_never_reached() -> None:
    history = History()
    lambda_task(history, "StepA", "Failed", "Succeeded")
    history.add("TaskStateExited", name="StepA", output='{"a": 1}')
    lambda_task(history, "StepB", "Succeeded")
    statuses = history.statuses("RUNNING")
    assert statuses == {"StepA": SUCCEEDED, "StepB": RUNNING}
    assert "StepC" not in statuses  # the page draws it as NOT_REACHED
    assert state_progress(history.events)["StepA"].output == {"a": 1}
    assert state_progress(history.events)["StepA"].input == {"n": 1}


@pytest.mark.parametrize(
    ("execution_status", "step", "handler"),
    [("RUNNING", CAUGHT, RUNNING), ("SUCCEEDED", CAUGHT, SUCCEEDED), ("FAILED", FAILED, SUCCEEDED)],
)
def test_a_caught_error_is_caught_unless_the_execution_failed(
    execution_status: str, step: str, handler: str
) -> None:
    history = History()
    lambda_task(history, "StepC", "Failed")
    history.add("TaskStateExited", name="StepC", output='{"Error": "Boom"}')
    history.add("TaskStateEntered", name="NotifyFailure")
    if execution_status != "RUNNING":
        history.add("TaskStateExited", name="NotifyFailure")
    progress = state_progress(history.events)
    assert progress["StepC"].error == "Boom"
    assert history.statuses(execution_status) == {"StepC": step, "NotifyFailure": handler}


def test_the_state_an_execution_ended_in_is_failed() -> None:
    history = History()
    history.add("FailStateEntered", name="Failed")
    history.add("ExecutionFailed", error="ForcedFailure", cause="step c")
    assert history.statuses("FAILED") == {"Failed": FAILED}
    assert state_progress(history.events)["Failed"].cause == "step c"
    uncaught = History()
    lambda_task(uncaught, "StepA", "Failed")
    uncaught.add("ExecutionFailed", error="Boom")
    assert uncaught.statuses("FAILED") == {"StepA": FAILED}
    stopped = History()
    stopped.add("WaitStateEntered", name="Wait")
    stopped.add("ExecutionAborted")
    assert stopped.statuses("ABORTED") == {"Wait": FAILED}


def test_a_task_waiting_for_its_token() -> None:
    history = History()
    history.add("TaskStateEntered", name="RequestApproval")
    for kind in ("TaskScheduled", "TaskStarted", "TaskSubmitted"):
        history.add(kind, resourceType="sqs", resource="sendMessage.waitForTaskToken")
    assert history.statuses("RUNNING") == {"RequestApproval": WAITING}
    history.add("TaskSucceeded", resourceType="sqs", resource="sendMessage.waitForTaskToken")
    assert history.statuses("RUNNING") == {"RequestApproval": RUNNING}
    history.add("TaskStateExited", name="RequestApproval")
    assert history.statuses("RUNNING") == {"RequestApproval": SUCCEEDED}


def test_interleaved_parallel_branches_are_told_apart() -> None:
    """Events of parallel branches interleave; each belongs to the state its
    ``previousEventId`` chain leads to (as in the local stack's QC history)."""
    history = History()
    history.add("ParallelStateEntered", name="RunChecks")
    started = history.add("ParallelStateStarted")
    one = history.add("TaskStateEntered", started, name="QC1")
    two = history.add("TaskStateEntered", started, name="QC2")
    scheduled_one = history.add("LambdaFunctionScheduled", one)
    scheduled_two = history.add("LambdaFunctionScheduled", two)
    history.add("LambdaFunctionFailed", scheduled_two, error="Boom")
    history.add("LambdaFunctionSucceeded", scheduled_one)
    history.add("TaskStateExited", name="QC1")
    assert history.statuses("RUNNING") == {"RunChecks": RUNNING, "QC1": SUCCEEDED, "QC2": RUNNING}
    assert state_progress(history.events)["QC2"].error == "Boom"
    assert NOT_REACHED not in history.statuses("RUNNING").values()
    # The Parallel state's own events follow its last branch's exit.
    retried = history.add("LambdaFunctionScheduled", two)
    exit_two = history.add(
        "TaskStateExited", history.add("LambdaFunctionSucceeded", retried), name="QC2"
    )
    history.add("ParallelStateSucceeded", exit_two)
    history.add("ParallelStateExited", exit_two, name="RunChecks")
    history.add("PassStateEntered", name="Finish")
    assert history.statuses("RUNNING") == {
        "RunChecks": SUCCEEDED,
        "QC1": SUCCEEDED,
        "QC2": SUCCEEDED,
        "Finish": RUNNING,
    }
    history.add("ParallelStateFailed", exit_two, error="Late")  # belongs to no running state
    assert history.statuses("RUNNING")["RunChecks"] == SUCCEEDED


def deployed_states(name: str) -> set[str]:
    """Every state of a workflow's definition, its branches' included."""
    definition = json.loads(open(f"statemachines/{name}.asl.json").read())
    found: set[str] = set()

    def walk(machine: dict[str, Any]) -> None:
        for state_name, state in machine["States"].items():
            found.add(state_name)
            for branch in state.get("Branches", []):
                walk(branch)

    walk(definition)
    return found


async def describe_calls(http: aiohttp.ClientSession, url: str) -> float:
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith('notifier_aws_api_calls_total{operation="DescribeExecution"}'):
            return float(line.split()[-1])
    return 0.0


async def test_a_finished_executions_graph_then_from_memory(
    daemon_factory: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon_factory() as daemon:
        status, _, answer = await call(http, "POST", f"{daemon.url}/hello", json={"who": "graph"})
        assert status == 200
        page = f"{daemon.url}/dashboard/executions/{answer['transactionId']}"
        async with http.get(page) as response:
            assert response.status == 200
            assert "execution.js" in await response.text()
        status, _, graph = await call(http, "GET", f"{page}/graph")
        assert status == 200, graph
        assert graph["executionArn"] == answer["executionArn"]
        assert graph["status"] == "SUCCEEDED" and graph["route"] == "hello"
        assert set(graph["definition"]["States"]) == deployed_states("hello")
        assert graph["states"]["SayHello"]["status"] == SUCCEEDED
        assert graph["states"]["SayHello"]["output"]["taskresult"] == "Hello 102 Class"
        assert "Wait" not in graph["states"]  # no waitSeconds: never reached

        # Finished, it never changes: shown again without asking Step Functions.
        before = await describe_calls(http, daemon.url)
        status, _, again = await call(http, "GET", f"{page}/graph")
        assert (status, again) == (200, graph)
        assert await describe_calls(http, daemon.url) == before

        # By execution ARN too, and an unknown one is 404.
        arn = answer["executionArn"]
        status, _, by_arn = await call(
            http, "GET", f"{daemon.url}/dashboard/executions/{arn}/graph"
        )
        assert (status, by_arn["name"]) == (200, answer["transactionId"])
        status, _, missing = await call(
            http, "GET", f"{daemon.url}/dashboard/executions/no-such-transaction/graph"
        )
        assert status == 404 and "no-such-transaction" in missing["message"]


async def test_the_charts_numbers_count_what_the_daemon_did(
    daemon_factory: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon_factory() as daemon:
        status, _, before = await call(http, "GET", f"{daemon.url}/dashboard/stats")
        assert status == 200
        assert before["held"] == 0 and before["maxHeld"] == daemon.settings.http.max_held
        status, _, answer = await call(http, "POST", f"{daemon.url}/hello", json={})
        assert status == 200 and answer["completedVia"] == "mqtt"
        status, _, after = await call(http, "GET", f"{daemon.url}/dashboard/stats")
        assert after["completions"]["mqtt"] == before["completions"].get("mqtt", 0) + 1
        buckets = after["latency"]["mqtt"]
        assert len(buckets) == len(after["latencyBuckets"]) and buckets[-1] >= 1
