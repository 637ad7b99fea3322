"""The state machines executed by moto, with the deployed handlers run in-process."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import boto3
from sfn_harness import REGION, TOPIC_ROOT, Stack

SUBTOPIC = "instance-1"


def process_data(stack: Stack, key: str) -> dict[str, Any]:
    s3 = boto3.client("s3", region_name=REGION)
    body = s3.get_object(Bucket=stack.outputs["ProcessDataBucketName"], Key=key)["Body"]
    return json.loads(body.read())


def put_process_data(stack: Stack, key: str, data: dict[str, Any]) -> None:
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=stack.outputs["ProcessDataBucketName"], Key=key, Body=json.dumps(data)
    )


def assert_notified(
    stack: Stack, name: str, status: str, subtopic: str = SUBTOPIC
) -> dict[str, Any]:
    topic, payload = stack.notification(name)
    assert topic == f"{TOPIC_ROOT}/{subtopic}/{name}"
    description = stack.sfn.describe_execution(executionArn=payload["executionArn"])
    assert payload["txnId"] == name == description["name"]
    assert payload["status"] == status
    assert payload["stateMachine"] == description["stateMachineArn"].rsplit(":", 1)[1]
    return payload


# ---------------------------------------------------------------- ProcessA


def test_processa_runs_steps_a_to_f_and_downstream(stack: Stack) -> None:
    put_process_data(stack, "txn-1", {"foo": "foo val"})
    result = stack.run("ProcessA", "txn-1", {"processData": "txn-1", "subtopic": SUBTOPIC})

    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"]) == {"processData": "txn-1"}
    data = process_data(stack, "txn-1")
    assert [key for key in data if key.startswith("step-")] == [
        f"step-{step}-output" for step in "abcdef"
    ]
    payload = assert_notified(stack, "txn-1", "SUCCEEDED")
    assert payload["output"] == {"processData": "txn-1"}
    assert "error" not in payload

    downstream = stack.wait(data["step-f-output"]["downstreamExecutionArn"])
    assert downstream["status"] == "SUCCEEDED"
    assert downstream["stateMachineArn"] == stack.outputs["DownstreamStateMachineArn"]
    assert_notified(stack, "txn-1-downstream", "SUCCEEDED")


def test_processa_without_subtopic_notifies_under_default(stack: Stack) -> None:
    put_process_data(stack, "txn-2", {})
    result = stack.run("ProcessA", "txn-2", {"processData": "txn-2"})
    assert result["status"] == "SUCCEEDED", result
    assert_notified(stack, "txn-2", "SUCCEEDED", subtopic="default")


def test_processa_retries_until_the_process_data_is_readable(stack: Stack) -> None:
    arn = stack.start("ProcessA", "txn-3", {"processData": "txn-3", "subtopic": SUBTOPIC})
    late_write = threading.Timer(0.5, put_process_data, (stack, "txn-3", {}))
    late_write.start()
    result = stack.wait(arn)
    late_write.join()

    assert result["status"] == "SUCCEEDED", result
    step_a = stack.lambdas.calls_of("processa-step-a")
    assert [call.error_type for call in step_a][:1] == ["S3DataPreconditionError"]
    assert step_a[-1].error_type is None
    assert "step-f-output" in process_data(stack, "txn-3")


def test_processa_gives_up_when_the_process_data_never_appears(stack: Stack) -> None:
    result = stack.run("ProcessA", "txn-4", {"processData": "txn-4", "subtopic": SUBTOPIC})
    assert result["status"] == "FAILED"
    assert result["error"] == "S3DataPreconditionError"
    assert len(stack.lambdas.calls_of("processa-step-a")) == 4  # first attempt and 3 retries
    assert_notified(stack, "txn-4", "FAILED")


def test_processa_forced_failure_from_the_input(stack: Stack) -> None:
    put_process_data(stack, "txn-5", {})
    result = stack.run(
        "ProcessA", "txn-5", {"processData": "txn-5", "subtopic": SUBTOPIC, "fail": "step-c"}
    )

    assert result["status"] == "FAILED"
    assert result["error"] == "ForcedFailure"
    cause = json.loads(result["cause"])
    assert cause["errorType"] == "ForcedFailure"
    assert "step-c" in cause["errorMessage"]
    assert len(stack.lambdas.calls_of("processa-step-c")) == 1  # not retried
    assert stack.lambdas.calls_of("processa-step-d") == []
    assert set(process_data(stack, "txn-5")) == {"step-a-output", "step-b-output"}

    payload = assert_notified(stack, "txn-5", "FAILED")
    assert payload["error"] == "ForcedFailure"
    assert payload["cause"] == result["cause"]
    assert "output" not in payload


def test_processa_forced_failure_from_the_process_data(stack: Stack) -> None:
    put_process_data(stack, "txn-6", {"fail": "step-e"})
    result = stack.run("ProcessA", "txn-6", {"processData": "txn-6", "subtopic": SUBTOPIC})
    assert result["status"] == "FAILED"
    assert result["error"] == "ForcedFailure"
    assert "step-e" in result["cause"]
    assert_notified(stack, "txn-6", "FAILED")


# ---------------------------------------------------------------- Hello


def test_hello_answers_with_taskresult(stack: Stack) -> None:
    result = stack.run("Hello", "hello-1", {"thekey": "thevalue", "subtopic": SUBTOPIC})
    assert result["status"] == "SUCCEEDED", result
    output = json.loads(result["output"])
    assert output == {"thekey": "thevalue", "subtopic": SUBTOPIC, "taskresult": "Hello 102 Class"}
    assert assert_notified(stack, "hello-1", "SUCCEEDED")["output"] == output


def test_hello_waits_when_asked(stack: Stack) -> None:
    started = time.monotonic()
    result = stack.run("Hello", "hello-2", {"waitSeconds": 1})
    assert result["status"] == "SUCCEEDED", result
    assert time.monotonic() - started >= 1
    assert json.loads(result["output"])["taskresult"] == "Hello 102 Class"
    assert_notified(stack, "hello-2", "SUCCEEDED", subtopic="default")


# ---------------------------------------------------------------- QC


def test_qc_runs_the_checks_and_publishes_the_summary(stack: Stack) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    queue_url = sqs.create_queue(QueueName="qc-summary-listener")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    boto3.client("sns", region_name=REGION).subscribe(
        TopicArn=stack.outputs["QCSummaryTopicArn"],
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"},
    )

    result = stack.run(
        "QC", "qc-1", {"GroupID": "group1", "StreamID": "streamA", "subtopic": SUBTOPIC}
    )

    assert result["status"] == "SUCCEEDED", result
    summary = json.loads(result["output"])
    assert summary["TotalPass"] is True
    assert summary["Checks"] == {"QC1": True, "QC2": True, "QC3": True}
    table = boto3.resource("dynamodb", region_name=REGION).Table(
        stack.outputs["QCSummaryTableName"]
    )
    row = table.get_item(Key={"GroupID": "group1", "StartTime": summary["StartTime"]})["Item"]
    assert row["TotalPass"] is True and row["QC2Pass"] is True and row["Status"] == "COMPLETE"
    (message,) = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)["Messages"]
    assert json.loads(message["Body"]) == summary
    assert assert_notified(stack, "qc-1", "SUCCEEDED")["output"] == summary


def test_qc_without_group_id_fails_validation(stack: Stack) -> None:
    result = stack.run("QC", "qc-2", {"StreamID": "streamA", "subtopic": SUBTOPIC})
    assert result["status"] == "FAILED"
    assert result["error"] == "ValidationError"
    assert "GroupID" in result["cause"]
    assert stack.lambdas.calls == []
    payload = assert_notified(stack, "qc-2", "FAILED")
    assert (payload["error"], payload["cause"]) == (result["error"], result["cause"])


def test_qc_with_a_non_string_stream_id_fails_validation(stack: Stack) -> None:
    result = stack.run("QC", "qc-3", {"GroupID": "group1", "StreamID": 12})
    assert result["status"] == "FAILED"
    assert result["error"] == "ValidationError"
    assert "StreamID" in result["cause"]


# ---------------------------------------------------------------- Archive


def archive_record(stack: Stack, name: str) -> dict[str, Any]:
    table = boto3.resource("dynamodb", region_name=REGION).Table(
        stack.outputs["ArchiveResultsTableName"]
    )
    return table.get_item(Key={"Id": name})["Item"]


def test_archive_decides_on_archive_and_quality(stack: Stack) -> None:
    cases = {
        "archive-1": ({"archive": True, "quality": 80}, "Archived"),
        "archive-2": ({"archive": True, "quality": 10}, "Quality_Fail"),
        "archive-3": ({"archive": False, "quality": 90}, "Unarchivable"),
    }
    for name, (forced, action) in cases.items():
        result = stack.run("Archive", name, {**forced, "subtopic": SUBTOPIC})
        assert result["status"] == "SUCCEEDED", result
        output = json.loads(result["output"])
        assert output["action"] == action
        assert output["approval"] == {"required": False}
        record = archive_record(stack, name)
        assert record["Action"] == action
        assert record["Archive"] is forced["archive"]
        assert record["Quality"] == forced["quality"]
        assert record["Approval"] is False
        assert record["Timestamp"] == output["file"]["Timestamp"]
        assert assert_notified(stack, name, "SUCCEEDED")["output"] == output


def wait_for_approval_request(stack: Stack) -> dict[str, Any]:
    sqs = boto3.client("sqs", region_name=REGION)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=stack.outputs["ApprovalQueueUrl"]).get("Messages")
        if messages:
            return json.loads(messages[0]["Body"])
        time.sleep(0.1)
    raise AssertionError("no approval request arrived")


def test_archive_waits_for_approval_and_resumes(stack: Stack) -> None:
    arn = stack.start(
        "Archive",
        "archive-4",
        {"approval_needed": True, "archive": True, "quality": 75, "subtopic": SUBTOPIC},
    )
    request = wait_for_approval_request(stack)
    assert request["ExecutionName"] == "archive-4"
    assert request["File"]["Quality"] == 75
    time.sleep(0.2)
    assert stack.sfn.describe_execution(executionArn=arn)["status"] == "RUNNING"
    assert stack.published() == []

    approval = {"approved": True, "comment": "looks fine"}
    stack.sfn.send_task_success(taskToken=request["TaskToken"], output=json.dumps(approval))
    result = stack.wait(arn)

    assert result["status"] == "SUCCEEDED", result
    output = json.loads(result["output"])
    assert output["action"] == "Archived"
    assert output["approval"] == approval
    assert archive_record(stack, "archive-4")["Approval"] is True
    assert_notified(stack, "archive-4", "SUCCEEDED")


def test_archive_rejected_by_the_approver(stack: Stack) -> None:
    arn = stack.start("Archive", "archive-5", {"approval_needed": True, "quality": 99})
    request = wait_for_approval_request(stack)
    stack.sfn.send_task_success(taskToken=request["TaskToken"], output='{"approved": false}')
    result = stack.wait(arn)
    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"])["action"] == "Rejected"
    assert archive_record(stack, "archive-5")["Action"] == "Rejected"


def test_archive_fails_on_send_task_failure(stack: Stack) -> None:
    arn = stack.start("Archive", "archive-6", {"approval_needed": True, "subtopic": SUBTOPIC})
    request = wait_for_approval_request(stack)
    stack.sfn.send_task_failure(
        taskToken=request["TaskToken"], error="ApprovalDenied", cause="nobody home"
    )
    result = stack.wait(arn)
    assert result["status"] == "FAILED"
    assert result["error"] == "ApprovalDenied"
    payload = assert_notified(stack, "archive-6", "FAILED")
    assert payload["error"] == "ApprovalDenied"
    # moto 5.2.5's SendTaskFailure drops the cause (AWS keeps it): whatever arrived is passed on.
    assert payload["cause"] == result.get("cause") and payload["cause"] in ("nobody home", None)
