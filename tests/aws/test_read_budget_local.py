"""The read budget against the local stack's Step Functions with a tiny DescribeExecution
bucket: AWS's own ThrottlingException, one call each, the budget backing off."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from notifier.aws.clients import AwsClients
from notifier.aws.errors import AwsError
from notifier.aws.read_budget import ReadBudget
from notifier.local.quotas import QuotaSettings
from notifier.local.settings import LocalStackSettings
from notifier.local.stack import LocalStack
from notifier.requests.executions import Executions

BUCKET = 2


@pytest.fixture(scope="module")
async def tiny_bucket_stack() -> AsyncIterator[LocalStack]:
    quotas = QuotaSettings().with_values([f"sfn-describe-execution={BUCKET}/1"])
    settings = LocalStackSettings(
        aws_port=0, mqtt_port=0, mqtt_tls_port=0, mqtt_wss_port=0, issuer_port=0, quotas=quotas
    )
    async with LocalStack(settings) as stack:
        yield stack


async def no_call(**params: Any) -> dict[str, Any]:
    raise AssertionError("only reads here")


async def test_a_burst_over_the_account_s_bucket_is_throttled_and_backed_off(
    tiny_bucket_stack: LocalStack,
) -> None:
    calls: list[str] = []
    aws = AwsClients(tiny_bucket_stack.aws_settings, on_call=calls.append)
    machine = tiny_bucket_stack.outputs["HelloStateMachineArn"]
    arn = machine.replace(":stateMachine:", ":execution:") + ":no-such-execution"
    async with aws.client("stepfunctions") as sfn:
        # A budget far above the account's bucket: the account throttles.
        executions = Executions(
            None, sfn, "bucket", "unit", dict, budget=ReadBudget(1000, burst=10),
            put_object=no_call, start_execution=no_call,
        )  # fmt: skip
        codes = []
        for _ in range(BUCKET + 1):
            try:
                await executions.describe(arn)
            except AwsError as exc:
                codes.append(exc.code)
        assert codes == ["ExecutionDoesNotExist"] * BUCKET + ["ThrottlingException"]
        assert calls == ["DescribeExecution"] * (BUCKET + 1)  # no retries by the SDK
        assert executions.throttled == {"DescribeExecution": 1}
        # With patience, it is made again after the backoff, until the bucket refills.
        with pytest.raises(AwsError) as raised:
            await executions.describe(arn, patience=30)
        assert raised.value.code == "ExecutionDoesNotExist"
