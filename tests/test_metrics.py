from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from notifier.aws.errors import AwsError
from notifier.aws.read_budget import ReadBudget
from notifier.metrics import Metrics
from notifier.requests.executions import Executions


def test_each_daemon_has_its_own_registry_with_prefixed_metrics() -> None:
    first, second = Metrics(), Metrics()
    first.requests.labels(route="p1", status="SUCCEEDED").inc()
    first.completion_latency.labels(source="mqtt").observe(0.002)
    first.aws_calls.labels(operation="StartExecution").inc(2)
    text = first.render().decode()
    assert 'notifier_requests_total{route="p1",status="SUCCEEDED"} 1.0' in text
    assert 'notifier_completion_latency_seconds_bucket{le="0.0025",source="mqtt"} 1.0' in text
    assert 'notifier_aws_api_calls_total{operation="StartExecution"} 2.0' in text
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert names and all(name.startswith(("notifier_", "process_", "python_")) for name in names)
    assert "process_open_fds" in names and "process_max_fds" in names
    assert 'notifier_build_info{version="' in text
    assert "notifier_requests_total{" not in second.render().decode()


def test_what_every_request_counts_lands_in_its_series() -> None:
    metrics = Metrics()
    for _ in range(2):
        metrics.count_request("p1", "SUCCEEDED")
        metrics.count_aws_call("PutObject")
    metrics.count_request("p1", "FAILED")
    finished = datetime(2026, 1, 1, tzinfo=UTC)
    metrics.observe_completion("mqtt", finished, finished + timedelta(milliseconds=2))
    text = metrics.render().decode()
    assert 'notifier_requests_total{route="p1",status="SUCCEEDED"} 2.0' in text
    assert 'notifier_requests_total{route="p1",status="FAILED"} 1.0' in text
    assert 'notifier_aws_api_calls_total{operation="PutObject"} 2.0' in text
    assert 'notifier_completions_total{source="mqtt"} 1.0' in text
    assert 'notifier_completion_latency_seconds_bucket{le="0.0025",source="mqtt"} 1.0' in text


async def no_call(**params: Any) -> dict[str, Any]:
    raise AssertionError("no call expected")


class ThrottlingStepFunctions:
    async def describe_execution(self, **params: Any) -> dict[str, Any]:
        error: Any = {"Code": "ThrottlingException", "Message": "Rate exceeded"}
        raise ClientError({"Error": error}, "DescribeExecution")

    async def stop_execution(self, **params: Any) -> dict[str, Any]:
        error: Any = {"Code": "ThrottlingException", "Message": "Rate exceeded"}
        raise ClientError({"Error": error}, "StopExecution")


async def test_step_functions_throttling_and_the_read_budget_are_reported() -> None:
    metrics = Metrics()
    executions = Executions(
        None, ThrottlingStepFunctions(), "bucket", "unit", dict, budget=ReadBudget(4, burst=4),
        on_throttled=lambda api: metrics.sfn_throttled.labels(api=api).inc(),
        put_object=no_call, start_execution=no_call,
    )  # fmt: skip
    metrics.watch_step_functions(executions)
    for _ in range(3):
        assert await executions.budget.spend("DescribeExecution")
    assert await executions.budget.spend("GetExecutionHistory")
    text = metrics.render().decode()
    assert "notifier_sfn_read_budget_rate 4.0" in text
    assert "notifier_sfn_read_budget_waiting 0.0" in text
    tokens = next(
        line for line in text.splitlines() if line.startswith("notifier_sfn_read_budget_tokens ")
    )
    assert 0.5 <= float(tokens.split()[1]) < 1.5  # 4 - 3.5, and what refilled since
    for _ in range(2):
        with pytest.raises(AwsError):
            await executions.describe("arn")
    with pytest.raises(AwsError):
        await executions.stop("arn")
    text = metrics.render().decode()
    assert 'notifier_sfn_throttled_total{api="DescribeExecution"} 2.0' in text
    assert 'notifier_sfn_throttled_total{api="StopExecution"} 1.0' in text
    assert 'notifier_sfn_throttled_total{api="StartExecution"} 0.0' in text
    assert 'notifier_sfn_reads_total{api="DescribeExecution"} 5.0' in text
    assert 'notifier_sfn_reads_total{api="GetExecutionHistory"} 1.0' in text
