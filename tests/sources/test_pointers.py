"""Completions that come as pointers: the output is fetched once, then the request answered,
never with the output missing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from notifier.aws.errors import AwsError
from notifier.requests.descriptions import completion_from_description
from notifier.requests.ids import new_txn_id
from notifier.requests.waiters import Registry, Status
from notifier.sources import InvalidNotificationError, parse_notification
from notifier.sources.pointers import OutputFetcher
from tests.support.eventually import eventually
from tests.support.executions import FakeExecutions, arn
from tests.support.sources import describer, started


def pointer(txn_id: str, execution_arn: str | None = None) -> bytes:
    return json.dumps(
        {
            "txnId": txn_id,
            "finishedAt": "2026-01-01T00:00:02Z",
            "executionArn": execution_arn or arn(txn_id),
            "stateMachine": "unit-Hello",
            "status": "SUCCEEDED",
            "fetchOutput": True,
        }
    ).encode()


def test_a_pointer_is_read_as_one() -> None:
    completion = parse_notification(pointer("t1"), "mqtt", "t1")
    assert completion.fetch_output and completion.output is None
    assert completion.status is Status.SUCCEEDED


def test_a_pointer_with_an_output_is_refused() -> None:
    message = {**json.loads(pointer("t1")), "output": None}
    with pytest.raises(InvalidNotificationError, match="no output"):
        parse_notification(json.dumps(message).encode(), "mqtt", "t1")


def test_only_a_success_points_to_its_output() -> None:
    message = {**json.loads(pointer("t1")), "status": "FAILED", "error": "E"}
    assert not parse_notification(json.dumps(message).encode(), "mqtt", "t1").fetch_output


async def test_a_pointer_resolves_with_the_fetched_output_via_its_path() -> None:
    registry, executions = Registry(max_held=10), FakeExecutions()
    txn = started(registry, new_txn_id())
    executions.answer(txn.txn_id, "SUCCEEDED")
    async with OutputFetcher(registry, describer(registry, executions)) as fetcher:
        async with registry.hold(txn.txn_id) as waiter:
            assert registry.resolve(txn.txn_id, parse_notification(pointer(txn.txn_id), "mqtt"))
            assert txn.completion is None  # not answered from the pointer
            completion = await asyncio.wait_for(waiter, 5)
    assert completion is not None
    assert completion.output == {"for": txn.execution_arn} and completion.via == "mqtt"
    assert not completion.fetch_output
    assert executions.described == [txn.execution_arn]
    assert fetcher.pointers == 1 and txn.heard_via == {"mqtt"}


async def test_pointers_by_every_path_cost_one_fetch() -> None:
    registry, executions = Registry(max_held=10), FakeExecutions()
    txn = started(registry, new_txn_id())
    executions.answer(txn.txn_id, "SUCCEEDED")
    gate = asyncio.Event()
    describe = executions.describe

    async def slow_describe(execution_arn: str, **turn: Any) -> dict[str, object]:
        await gate.wait()
        return await describe(execution_arn, **turn)

    executions.describe = slow_describe  # type: ignore[method-assign]
    async with OutputFetcher(registry, describer(registry, executions)) as fetcher:
        async with registry.hold(txn.txn_id) as waiter:
            for via in ("mqtt", "sqs", "mqtt"):
                registry.resolve(txn.txn_id, parse_notification(pointer(txn.txn_id), via))
            gate.set()
            completion = await asyncio.wait_for(waiter, 5)
            # After the answer, a late pointer is a duplicate: nothing more is fetched.
            assert not registry.resolve(txn.txn_id, parse_notification(pointer(txn.txn_id), "sqs"))
    assert completion is not None and completion.via == "mqtt"
    assert fetcher.pointers == 1 and len(executions.described) == 1
    assert txn.heard_via == {"mqtt", "sqs"}


async def test_a_failed_fetch_is_tried_again_while_someone_waits() -> None:
    registry, executions = Registry(max_held=10), FakeExecutions()
    txn = started(registry, new_txn_id())
    throttled = AwsError("DescribeExecution", "ThrottlingException", "slow down")
    executions.answer(txn.txn_id, throttled, throttled, "SUCCEEDED")
    fetch = OutputFetcher(registry, describer(registry, executions), retry_min=0.01)
    async with fetch as fetcher, registry.hold(txn.txn_id) as waiter:
        registry.resolve(txn.txn_id, parse_notification(pointer(txn.txn_id), "mqtt"))
        completion = await asyncio.wait_for(waiter, 5)
    assert completion is not None and completion.output == {"for": txn.execution_arn}
    assert fetcher.failures == 2 and len(executions.described) == 3


async def test_nothing_is_fetched_for_a_request_nobody_holds_or_another_execution() -> None:
    registry, executions = Registry(max_held=10), FakeExecutions()
    txn = started(registry, new_txn_id())
    async with OutputFetcher(registry, describer(registry, executions)) as fetcher:
        forged = parse_notification(pointer(txn.txn_id, arn("someone-else")), "mqtt")
        assert not registry.resolve(txn.txn_id, forged)
        assert not registry.resolve("unknown", parse_notification(pointer("unknown"), "mqtt"))
        registry.resolve(txn.txn_id, parse_notification(pointer(txn.txn_id), "mqtt"))
        await eventually(lambda: not fetcher._fetching)
    assert executions.described == [] and txn.completion is None


def test_the_unnotified_mark_is_taken_off_a_described_output() -> None:
    output = {"result": {"r": 1}, "notifyError": {"Error": "E", "Cause": "C"}}
    description = {"executionArn": "a", "status": "SUCCEEDED", "output": json.dumps(output)}
    assert completion_from_description(description).output == {"r": 1}
    plain = {**description, "output": json.dumps({"result": 1, "notifyError": "not a mark"})}
    assert completion_from_description(plain).output == {"result": 1, "notifyError": "not a mark"}
