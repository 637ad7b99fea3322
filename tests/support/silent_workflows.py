"""Test-only state machines that end without publishing a completion, as a crash, a
timeout or an outside StopExecution would, created once per session in the local stack.

``notifier-test-Silent`` (and ``...-SilentTimeout``) get their status changes forwarded by
the stack's forwarder, through a rule of their own shaped like the template's StatusRule;
``notifier-test-Quiet`` has no rule at all: only DescribeExecution learns how it ended.
"""

from __future__ import annotations

import json
from typing import Any

from notifier.local.stack import LocalStack

ROLE = "arn:aws:iam::123456789012:role/notifier-test"
RULE = "notifier-test-silent-status"

# Waits {"waitSeconds": n}, then with {"fail": true} fails as a crashed Lambda would;
# otherwise its output is its input.
SILENT = {
    "Comment": "Test-only: ends without publishing.",
    "StartAt": "Wait",
    "States": {
        "Wait": {"Type": "Wait", "SecondsPath": "$.waitSeconds", "Next": "Crash?"},
        "Crash?": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.fail", "IsPresent": True, "Next": "Crash"}],
            "Default": "Done",
        },
        "Crash": {"Type": "Fail", "Error": "Lambda.Unknown", "Cause": "the function crashed"},
        "Done": {"Type": "Pass", "End": True},
    },
}
SILENT_TIMEOUT = {
    "Comment": "Test-only: runs into its own TimeoutSeconds.",
    "TimeoutSeconds": 1,
    "StartAt": "Sleep",
    "States": {"Sleep": {"Type": "Wait", "Seconds": 30, "End": True}},
}
MACHINES = {
    "TestSilentStateMachineArn": ("notifier-test-Silent", SILENT, True),
    "TestSilentTimeoutStateMachineArn": ("notifier-test-SilentTimeout", SILENT_TIMEOUT, True),
    "TestQuietStateMachineArn": ("notifier-test-Quiet", SILENT, False),
}


async def create_silent_workflows(stack: LocalStack) -> None:
    """Create the machines (their ARNs go into ``stack.outputs``) and the forwarding rule."""
    if all(output in stack.outputs for output in MACHINES):
        return
    forwarded = []
    async with stack.aws().client("stepfunctions") as sfn:
        for output, (name, definition, forward) in MACHINES.items():
            created = await sfn.create_state_machine(
                name=name, definition=json.dumps(definition), roleArn=ROLE
            )
            stack.outputs[output] = created["stateMachineArn"]
            if forward:
                forwarded.append(created["stateMachineArn"])
    pattern: dict[str, Any] = {
        "source": ["aws.states"],
        "detail-type": ["Step Functions Execution Status Change"],
        "detail": {"stateMachineArn": forwarded},
    }
    async with stack.aws().client("events") as events:
        await events.put_rule(Name=RULE, EventPattern=json.dumps(pattern), State="ENABLED")
        await events.put_targets(
            Rule=RULE,
            Targets=[{"Id": "forwarder", "Arn": stack.outputs["StatusForwarderFunctionArn"]}],
        )
