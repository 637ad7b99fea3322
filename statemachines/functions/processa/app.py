"""Steps a..f of the ProcessA workflow.

The process data lives in one S3 object (the "sidecar"): the key arrives as
``processData`` in the execution input. Every step reads the object, checks
that the previous step's output is there (S3 may serve an older copy of an
object that was just written), adds its own output and writes the object back.
A missing predecessor raises ``S3DataPreconditionError``, which the state
machine retries. Step f also starts the Downstream state machine. The object
keeps the metadata it was stored with (the route, the request's fingerprint).

Event (built by the state machine):
    {"input": <the state data>, "executionName": ..., "executionArn": ...}

Environment:
    PROCESS_DATA_BUCKET             bucket holding the process data
    DOWNSTREAM_STATE_MACHINE_ARN    state machine started by step f
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from typing import Any

import boto3

STEPS = ("a", "b", "c", "d", "e", "f")
# At most 80 characters: the longest name Step Functions accepts for an execution.
EXECUTION_NAME_LIMIT = 80


class S3DataPreconditionError(Exception):
    """The process data does not (yet) hold what this step needs."""


class ForcedFailure(Exception):
    """The input asked this step to fail, to exercise the failure path."""


@functools.cache
def client(service: str) -> Any:
    """One client per service for the life of the container, as Lambda code should: creating
    one costs more than most calls made with it."""
    return boto3.client(service)


def output_key(step: str) -> str:
    return f"step-{step}-output"


def read_process_data(bucket: str, key: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The process data and the object's metadata."""
    s3 = client("s3")
    try:
        stored = s3.get_object(Bucket=bucket, Key=key)
    except s3.exceptions.NoSuchKey as error:
        raise S3DataPreconditionError(f"process data s3://{bucket}/{key} not found") from error
    data = json.loads(stored["Body"].read())
    if not isinstance(data, dict):
        raise ValueError(f"process data s3://{bucket}/{key} is not a JSON object")
    return data, stored.get("Metadata", {})


def write_process_data(
    bucket: str, key: str, data: dict[str, Any], metadata: dict[str, str]
) -> None:
    client("s3").put_object(
        Bucket=bucket,
        Key=key,
        Body=json.dumps(data).encode(),
        ContentType="application/json",
        ServerSideEncryption="AES256",
        Metadata=metadata,
    )


def check_read_predicate(step: str, data: dict[str, Any]) -> None:
    """Step a needs only the object; every later step needs its predecessor's output."""
    index = STEPS.index(step)
    if index == 0:
        return
    previous = output_key(STEPS[index - 1])
    if previous not in data:
        raise S3DataPreconditionError(f"step-{step}: {previous} not yet in the process data")


def check_forced_failure(step: str, state: dict[str, Any], data: dict[str, Any]) -> None:
    name = f"step-{step}"
    if name in (state.get("fail"), data.get("fail")):
        raise ForcedFailure(f"{name} failed because the input asked it to")


def run_step(step: str, event: dict[str, Any], produce: Callable[[dict[str, Any]], Any]) -> dict:
    state = event["input"]
    key = state["processData"]
    bucket = os.environ["PROCESS_DATA_BUCKET"]
    data, metadata = read_process_data(bucket, key)
    check_read_predicate(step, data)
    check_forced_failure(step, state, data)
    data[output_key(step)] = produce(data)
    write_process_data(bucket, key, data, metadata)
    return {"step": f"step-{step}", "processData": key}


def step_a(event: dict[str, Any], context: Any = None) -> dict:
    return run_step(
        "a",
        event,
        lambda _: {
            "status": "ok",
            "details": "nothing to share",
            "stepAOutput1": "a1",
            "stepAOutput2": False,
            "stepAOutput3": 123,
        },
    )


def step_b(event: dict[str, Any], context: Any = None) -> dict:
    return run_step("b", event, lambda _: {"property1": "p1", "property2": "p2"})


def step_c(event: dict[str, Any], context: Any = None) -> dict:
    return run_step("c", event, lambda _: {"cProperty": "i like c"})


def step_d(event: dict[str, Any], context: Any = None) -> dict:
    return run_step("d", event, lambda _: {"d": "d output"})


def step_e(event: dict[str, Any], context: Any = None) -> dict:
    return run_step("e", event, lambda _: {"e": "e output"})


def step_f(event: dict[str, Any], context: Any = None) -> dict:
    def start_downstream(data: dict[str, Any]) -> dict[str, str]:
        if output_key("f") in data:  # a retried step f: downstream already started
            return data[output_key("f")]
        arn = start_downstream_execution(event)
        return {"downstreamExecutionArn": arn}

    return run_step("f", event, start_downstream)


def start_downstream_execution(event: dict[str, Any]) -> str:
    """Start Downstream under a name derived from this execution, so a retry cannot start two."""
    state_machine_arn = os.environ["DOWNSTREAM_STATE_MACHINE_ARN"]
    state = event["input"]
    suffix = "-downstream"
    name = event["executionName"][: EXECUTION_NAME_LIMIT - len(suffix)] + suffix
    downstream_input = {
        "processData": state["processData"],
        "subtopic": state.get("subtopic", "default"),
        "parentExecutionArn": event.get("executionArn"),
    }
    sfn = client("stepfunctions")
    try:
        response = sfn.start_execution(
            stateMachineArn=state_machine_arn, name=name, input=json.dumps(downstream_input)
        )
    except sfn.exceptions.ExecutionAlreadyExists:
        return execution_arn(state_machine_arn, name)
    return response["executionArn"]


def execution_arn(state_machine_arn: str, name: str) -> str:
    """arn:...:stateMachine:<machine> -> arn:...:execution:<machine>:<name>"""
    return f"{state_machine_arn.replace(':stateMachine:', ':execution:', 1)}:{name}"
