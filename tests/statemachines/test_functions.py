"""The step Lambdas' handlers, called directly against moto."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from notifier.ops.package import source_dir

REGION = "us-east-1"


def load_function_module(group: str) -> Any:
    """Import statemachines/functions/<group>/app.py (every group's module is called app)."""
    path = source_dir() / "functions" / group / "app.py"
    spec = importlib.util.spec_from_file_location(f"statemachines_functions_{group}_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


processa = load_function_module("processa")
qc = load_function_module("qc")
archive = load_function_module("archive")
hello = load_function_module("hello")

BUCKET = "process-data"
KEY = "0x58fe985b67000000"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def s3(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        monkeypatch.setenv("PROCESS_DATA_BUCKET", BUCKET)
        yield client


def put(s3: Any, data: dict[str, Any]) -> None:
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=json.dumps(data))


def get(s3: Any) -> dict[str, Any]:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read())


def event(**state: Any) -> dict[str, Any]:
    return {"input": {"processData": KEY, **state}, "executionName": "txn-1"}


# ---------------------------------------------------------------- ProcessA


def test_error_classes_carry_the_names_the_state_machine_retries_and_reports() -> None:
    assert processa.S3DataPreconditionError.__name__ == "S3DataPreconditionError"
    assert processa.ForcedFailure.__name__ == "ForcedFailure"


def test_step_a_needs_the_object(s3: Any) -> None:
    with pytest.raises(processa.S3DataPreconditionError, match="not found"):
        processa.step_a(event())


def test_step_a_adds_its_output_and_writes_encrypted(s3: Any) -> None:
    put(s3, {"foo": "foo val"})
    assert processa.step_a(event()) == {"step": "step-a", "processData": KEY}
    assert get(s3) == {
        "foo": "foo val",
        "step-a-output": {
            "status": "ok",
            "details": "nothing to share",
            "stepAOutput1": "a1",
            "stepAOutput2": False,
            "stepAOutput3": 123,
        },
    }
    assert s3.head_object(Bucket=BUCKET, Key=KEY)["ServerSideEncryption"] == "AES256"


def test_the_object_keeps_its_metadata_through_the_steps(s3: Any) -> None:
    metadata = {"notifier-route": "p1", "notifier-request-sha256": "ab" * 32}
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"{}", Metadata=metadata)
    processa.step_a(event())
    processa.step_b(event())
    assert s3.head_object(Bucket=BUCKET, Key=KEY)["Metadata"] == metadata


@pytest.mark.parametrize("step", ["b", "c", "d", "e", "f"])
def test_each_later_step_needs_its_predecessors_output(s3: Any, step: str) -> None:
    put(s3, {"foo": "foo val"})
    with pytest.raises(processa.S3DataPreconditionError, match="output not yet"):
        getattr(processa, f"step_{step}")(event())
    assert get(s3) == {"foo": "foo val"}


def test_steps_b_to_e_add_the_seed_shapes(s3: Any) -> None:
    put(s3, {})
    for step in "abcde":
        getattr(processa, f"step_{step}")(event())
    data = get(s3)
    assert data["step-b-output"] == {"property1": "p1", "property2": "p2"}
    assert data["step-c-output"] == {"cProperty": "i like c"}
    assert data["step-d-output"] == {"d": "d output"}
    assert data["step-e-output"] == {"e": "e output"}


@pytest.mark.parametrize("where", ["input", "object"])
def test_forced_failure_names_the_step(s3: Any, where: str) -> None:
    put(s3, {"step-b-output": {}, **({"fail": "step-c"} if where == "object" else {})})
    state = {"fail": "step-c"} if where == "input" else {}
    processa.step_a(event(**state))  # other steps are not affected
    with pytest.raises(processa.ForcedFailure, match="step-c"):
        processa.step_c(event(**state))
    assert "step-c-output" not in get(s3)


def test_step_f_starts_downstream_once(s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    machine = sfn.create_state_machine(
        name="Downstream",
        definition=json.dumps({"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}}),
        roleArn="arn:aws:iam::123456789012:role/downstream",
    )["stateMachineArn"]
    monkeypatch.setenv("DOWNSTREAM_STATE_MACHINE_ARN", machine)
    put(s3, {"step-e-output": {"e": "e output"}})

    processa.step_f(event(subtopic="inst-1"))
    arn = get(s3)["step-f-output"]["downstreamExecutionArn"]
    assert arn.endswith(":execution:Downstream:txn-1-downstream")
    started = sfn.describe_execution(executionArn=arn)
    assert json.loads(started["input"])["processData"] == KEY
    assert json.loads(started["input"])["subtopic"] == "inst-1"

    processa.step_f(event(subtopic="inst-1"))  # a retry after the write: no second execution
    assert get(s3)["step-f-output"]["downstreamExecutionArn"] == arn
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 1


def test_downstream_execution_name_fits_the_limit() -> None:
    machine = "arn:aws:states:us-east-1:123456789012:stateMachine:Downstream"
    assert processa.execution_arn(machine, "x") == (
        "arn:aws:states:us-east-1:123456789012:execution:Downstream:x"
    )


# ---------------------------------------------------------------- Hello


def test_hello_adds_taskresult() -> None:
    assert hello.say_hello({"thekey": "thevalue"}) == {
        "thekey": "thevalue",
        "taskresult": "Hello 102 Class",
    }


# ---------------------------------------------------------------- QC


@pytest.fixture
def qc_table(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with mock_aws():
        dynamodb = boto3.resource("dynamodb", region_name=REGION)
        table = dynamodb.create_table(
            TableName="qc-summary",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "GroupID", "AttributeType": "S"},
                {"AttributeName": "StartTime", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "GroupID", "KeyType": "HASH"},
                {"AttributeName": "StartTime", "KeyType": "RANGE"},
            ],
        )
        monkeypatch.setenv("QC_SUMMARY_TABLE", "qc-summary")
        yield table


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"StreamID": "s"}, "GroupID"),
        ({"GroupID": 7, "StreamID": "s"}, "GroupID"),
        ({"GroupID": "g"}, "StreamID"),
        ({"GroupID": "g", "StreamID": ""}, "StreamID"),
    ],
)
def test_start_qc_rejects_bad_input(qc_table: Any, payload: dict, field: str) -> None:
    with pytest.raises(qc.ValidationError, match=field):
        qc.start_qc(payload)
    assert qc_table.scan()["Items"] == []


def test_qc_run_records_the_checks_and_the_total(qc_table: Any, monkeypatch) -> None:
    monkeypatch.setattr(qc.time, "sleep", lambda seconds: None)
    started = qc.start_qc({"GroupID": "group1", "StreamID": "streamA"})
    assert started["StartTime"].endswith("Z")
    checks = [qc.qc_process1(started), qc.qc_process2(started), qc.qc_process3(started)]
    summary = qc.end_qc({"qc": started, "checks": checks})
    assert summary["TotalPass"] is True
    assert summary["Checks"] == {"QC1": True, "QC2": True, "QC3": True}
    row = qc_table.get_item(Key={"GroupID": "group1", "StartTime": started["StartTime"]})["Item"]
    assert row["StreamID"] == "streamA"
    assert (row["QC1Pass"], row["QC2Pass"], row["QC3Pass"]) == (True, True, True)
    assert row["TotalPass"] is True
    assert row["Status"] == "COMPLETE"


def test_end_qc_fails_the_total_when_a_check_fails(qc_table: Any) -> None:
    started = qc.start_qc({"GroupID": "group1", "StreamID": "streamA"})
    checks = [{"check": "QC1", "pass": True}, {"check": "QC2", "pass": False}]
    assert qc.end_qc({"qc": started, "checks": checks})["TotalPass"] is False


# ---------------------------------------------------------------- Archive


def test_file_metadata_takes_forced_values() -> None:
    metadata = archive.file_metadata({"archive": False, "quality": 42, "approval_needed": True})
    assert (metadata["Archive"], metadata["Quality"], metadata["ApprovalNeeded"]) == (
        False,
        42,
        True,
    )
    assert metadata["Timestamp"].endswith("Z")


def test_file_metadata_is_random_otherwise() -> None:
    for _ in range(50):
        metadata = archive.file_metadata({"quality": "high", "archive": "yes"})
        assert isinstance(metadata["Archive"], bool)
        assert 0 <= metadata["Quality"] <= 100
        assert metadata["ApprovalNeeded"] is False
