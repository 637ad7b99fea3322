"""The source template, its packaging, cfn-lint, and the ASL files."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

from notifier.local.iot_policy import IotPolicy
from notifier.ops.package import (
    checkov_findings,
    source_dir,
    unexplained_skips,
)
from tests.support.template import resources_of

MACHINES = {
    "ProcessAStateMachine": "processa",
    "DownstreamStateMachine": "downstream",
    "HelloStateMachine": "hello",
    "HelloExpressStateMachine": "hello",
    "QCStateMachine": "qc",
    "ArchiveStateMachine": "archive",
}
EXPRESS_MACHINES = {"HelloExpressStateMachine"}
"""They emit no status events, and have neither DescribeExecution nor history."""
SERVICE_RESOURCES = {
    "arn:aws:states:::aws-sdk:iotdataplane:publish",
    "arn:aws:states:::sns:publish",
    "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
    "arn:aws:states:::dynamodb:putItem",
}
LAMBDA_SUBSTITUTION = re.compile(r"^\$\{[A-Za-z0-9]+FunctionArn\}$")
NOTIFY_TOPIC = "States.Format('${TopicRoot}/{}/{}', $.subtopic, $$.Execution.Name)"


def asl(name: str) -> dict[str, Any]:
    return json.loads((source_dir() / f"{name}.asl.json").read_text())


def all_states(states: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in states.items():
        yield name, state
        for branch in state.get("Branches", []):
            yield from all_states(branch["States"])


# ---------------------------------------------------------------- the template


def test_template_parameters_and_outputs(template: dict[str, Any]) -> None:
    assert template["Parameters"]["Stage"]["Default"] == "dev"
    assert template["Parameters"]["TopicRoot"]["Default"] == "notifier"
    assert "Transform" not in template
    for output in (
        "ProcessDataBucketName",
        "TopicRoot",
        "ProcessAStateMachineArn",
        "DownstreamStateMachineArn",
        "HelloStateMachineArn",
        "QCStateMachineArn",
        "ArchiveStateMachineArn",
        "QCSummaryTableName",
        "ArchiveResultsTableName",
        "QCSummaryTopicArn",
        "ApprovalQueueUrl",
        "ApprovalTableName",
    ):
        assert output in template["Outputs"], output


def test_bucket_is_encrypted_private_expiring_and_tls_only(template: dict[str, Any]) -> None:
    bucket = template["Resources"]["ProcessDataBucket"]["Properties"]
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == {
        "Ref": "ProcessDataExpirationDays"
    }
    (policy,) = resources_of(template, "AWS::S3::BucketPolicy").values()
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_each_workflow_has_its_own_role(template: dict[str, Any]) -> None:
    machines = resources_of(template, "AWS::StepFunctions::StateMachine")
    assert set(machines) == set(MACHINES)
    roles = {
        name: machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]
        for name, machine in machines.items()
    }
    # The same definition, Standard or Express, needs the same permissions: one role.
    for name, role in roles.items():
        assert [MACHINES[other] for other, r in roles.items() if r == role] == [
            MACHINES[name]
        ] * sum(MACHINES[other] == MACHINES[name] for other in roles)
    for name, machine in machines.items():
        expected = "EXPRESS" if name in EXPRESS_MACHINES else "STANDARD"
        assert machine["Properties"]["StateMachineType"] == expected


# ---------------------------------------------------------------- ASL


@pytest.mark.parametrize("resource_name", MACHINES)
def test_asl_files_are_wired_to_the_template(template: dict[str, Any], resource_name: str) -> None:
    properties = template["Resources"][resource_name]["Properties"]
    assert properties["DefinitionS3Location"] == f"{MACHINES[resource_name]}.asl.json"
    text = (source_dir() / properties["DefinitionS3Location"]).read_text()
    used = set(re.findall(r"\$\{([A-Za-z0-9]+)\}", text))
    assert used == set(properties["DefinitionSubstitutions"])


@pytest.mark.parametrize("name", MACHINES.values())
def test_asl_resources_are_known_forms(name: str) -> None:
    for state_name, state in all_states(asl(name)["States"]):
        if state["Type"] != "Task":
            continue
        resource = state["Resource"]
        assert resource in SERVICE_RESOURCES or LAMBDA_SUBSTITUTION.match(resource), (
            state_name,
            resource,
        )


@pytest.mark.parametrize("name", MACHINES.values())
def test_asl_notifies_completion(name: str) -> None:
    states = asl(name)["States"]
    assert states[asl(name)["StartAt"]]["Type"] == "Choice"  # fills in the default subtopic
    notify = states["NotifySuccess"]
    assert notify["Resource"] == "arn:aws:states:::aws-sdk:iotdataplane:publish"
    assert notify["Parameters"]["Topic.$"] == NOTIFY_TOPIC
    assert notify["Parameters"]["Qos"] == 1
    assert notify["Parameters"]["Payload"] == {
        "txnId.$": "$$.Execution.Name",
        "finishedAt.$": "$$.State.EnteredTime",
        "executionArn.$": "$$.Execution.Id",
        "stateMachine.$": "$$.StateMachine.Name",
        "status": "SUCCEEDED",
        "output.$": "$.result",
    }
    assert notify["Retry"] and notify["TimeoutSeconds"] <= 30
    # Whatever fails the full message (IoT refuses one over 128 KB) falls back to the pointer.
    assert notify["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.notifyError", "Next": "NotifyPointer"}
    ]
    pointer = states["NotifyPointer"]
    assert pointer["Resource"] == notify["Resource"]
    assert pointer["Parameters"]["Topic.$"] == NOTIFY_TOPIC
    payload = dict(notify["Parameters"]["Payload"])
    del payload["output.$"]
    assert pointer["Parameters"]["Payload"] == {**payload, "fetchOutput": True}
    assert pointer["Retry"] and pointer["Next"] == notify["Next"] == "Done"
    # Neither published: the output says so, for the status forwarder to publish instead.
    assert pointer["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.notifyError", "Next": "Unnotified"}
    ]
    assert states["Unnotified"]["Parameters"] == {
        "result.$": "$.result",
        "notifyError.$": "$.notifyError",
    }
    assert states["Unnotified"]["End"] is True
    assert states["Done"] == {**states["Done"], "InputPath": "$.result", "End": True}


@pytest.mark.parametrize("name", MACHINES.values())
def test_failures_are_left_to_the_status_forwarder(name: str) -> None:
    """A workflow publishes only its success: each completion is one message."""
    publishes = [
        state_name
        for state_name, state in all_states(asl(name)["States"])
        if state.get("Resource") == "arn:aws:states:::aws-sdk:iotdataplane:publish"
    ]
    assert publishes == ["NotifySuccess", "NotifyPointer"]


@pytest.mark.parametrize("name", MACHINES.values())
def test_every_next_names_a_state(name: str) -> None:
    def check(states: dict[str, Any]) -> None:
        for state_name, state in states.items():
            targets = [state.get("Next"), state.get("Default")]
            targets += [c.get("Next") for c in state.get("Catch", []) + state.get("Choices", [])]
            for target in filter(None, targets):
                assert target in states, (state_name, target)
            for branch in state.get("Branches", []):
                check(branch["States"])

    check(asl(name)["States"])


@pytest.mark.parametrize("name", MACHINES.values())
def test_every_work_state_catches_into_failed(name: str) -> None:
    top_level = asl(name)["States"]
    if name == "downstream":  # Pass states only: nothing can fail
        assert "Failed" not in top_level
        return
    assert top_level["Failed"] == {**top_level["Failed"], "Type": "Fail"}
    assert top_level["Failed"]["ErrorPath"] == "$.error.Error"
    assert top_level["Failed"]["CausePath"] == "$.error.Cause"
    for state_name, state in top_level.items():
        if state["Type"] not in ("Task", "Parallel") or state_name.startswith("Notify"):
            continue
        assert {
            "ErrorEquals": ["States.ALL"],
            "ResultPath": "$.error",
            "Next": "Failed",
        } in (state["Catch"]), state_name


def test_processa_steps_retry_the_read_predicate() -> None:
    states = asl("processa")["States"]
    for step in "ABCDEF":
        retriers = states[f"Step{step}"]["Retry"]
        assert any(r["ErrorEquals"] == ["S3DataPreconditionError"] for r in retriers)


def test_status_changes_of_every_workflow_reach_topic_and_queue(template: dict[str, Any]) -> None:
    (rule,) = resources_of(template, "AWS::Events::Rule").values()
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.states"]
    assert pattern["detail-type"] == ["Step Functions Execution Status Change"]
    assert pattern["detail"]["stateMachineArn"] == [
        {"Ref": name} for name in MACHINES if name not in EXPRESS_MACHINES
    ]
    targets = {target["Id"]: target["Arn"] for target in rule["Properties"]["Targets"]}
    assert targets == {
        "StatusTopic": {"Ref": "StatusTopic"},
        "StatusQueue": {"Fn::GetAtt": ["StatusQueue", "Arn"]},
        "StatusForwarder": {"Fn::GetAtt": ["StatusForwarderFunction", "Arn"]},
    }
    for output in (
        "StatusTopicArn",
        "StatusQueueUrl",
        "StatusForwarderFunctionArn",
        "StatusUndeliveredQueueUrl",
        "ApprovalDeadLetterQueueUrl",
    ):
        assert output in template["Outputs"]


def test_the_status_feed_sampling_fits_a_connection_at_the_account_rate(
    template: dict[str, Any],
) -> None:
    function = template["Resources"]["StatusForwarderFunction"]["Properties"]
    assert function["Environment"]["Variables"]["STATUS_FEED_ONE_IN"] == {"Ref": "StatusFeedOneIn"}
    one_in = template["Parameters"]["StatusFeedOneIn"]["Default"]
    # RUNNING and final of 300 executions/s, within 80% of 100 deliveries/s per connection.
    assert 2 * 300 / one_in <= 80


def test_the_forwarder_may_publish_and_send_to_instance_queues_only(
    template: dict[str, Any],
) -> None:
    resources = template["Resources"]
    function = resources["StatusForwarderFunction"]["Properties"]
    assert function["Code"] == "functions/forwarder"
    prefix = function["Environment"]["Variables"]["COMPLETION_QUEUE_PREFIX"]
    assert prefix == {"Fn::Sub": "notifier-${Stage}-completions-"}
    assert template["Outputs"]["CompletionQueuePrefix"]["Value"] == prefix
    (policy,) = resources["StatusForwarderFunctionRole"]["Properties"]["Policies"]
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    assert statements["SendToInstanceQueues"]["Resource"]["Fn::Sub"].endswith(
        ":notifier-${Stage}-completions-*"
    )
    assert statements["PublishStatusAndCompletions"]["Action"] == "iot:Publish"
    permission = resources["StatusForwarderInvokePermission"]["Properties"]
    assert permission["Principal"] == "events.amazonaws.com"
    assert permission["SourceArn"] == {"Fn::GetAtt": ["StatusRule", "Arn"]}


# ---------------------------------------------------------------- monitoring

NO_VALUE = object()
STATES_METRICS = {
    "ExecutionsStarted",
    "ExecutionsSucceeded",
    "ExecutionsFailed",
    "ExecutionsTimedOut",
    "ExecutionsAborted",
    "ExecutionTime",
}
PSEUDO_PARAMETERS = {"AWS::Region", "AWS::AccountId", "AWS::Partition", "AWS::URLSuffix"}
ALARM_TOPIC = "arn:aws:sns:us-east-1:123456789012:notifier-alarms"


def condition_value(template: dict[str, Any], expression: Any, parameters: dict[str, str]) -> Any:
    """Evaluate a condition expression (Fn::Not/And/Or/Equals, Ref, Condition)."""
    if isinstance(expression, dict) and len(expression) == 1:
        ((key, value),) = expression.items()
        if key == "Ref":
            return parameters.get(value, template["Parameters"][value].get("Default"))
        if key == "Condition":
            return condition_value(template, template["Conditions"][value], parameters)
        arguments = [condition_value(template, v, parameters) for v in value]
        if key == "Fn::Not":
            return not arguments[0]
        if key == "Fn::And":
            return all(arguments)
        if key == "Fn::Or":
            return any(arguments)
        if key == "Fn::Equals":
            return arguments[0] == arguments[1]
        raise AssertionError(f"unexpected {key} in a condition")
    return expression


def resolved(template: dict[str, Any], value: Any, parameters: dict[str, str]) -> Any:
    """``value`` with Fn::If decided, AWS::NoValue dropped and parameter Refs filled in."""
    if isinstance(value, dict):
        if set(value) == {"Fn::If"}:
            name, when_true, when_false = value["Fn::If"]
            chosen = (
                when_true
                if condition_value(template, {"Condition": name}, parameters)
                else when_false
            )
            return resolved(template, chosen, parameters)
        if value == {"Ref": "AWS::NoValue"}:
            return NO_VALUE
        if set(value) == {"Ref"} and value["Ref"] in template["Parameters"]:
            return condition_value(template, value, parameters)
        items = {k: resolved(template, v, parameters) for k, v in value.items()}
        return {k: v for k, v in items.items() if v is not NO_VALUE}
    if isinstance(value, list):
        items = [resolved(template, v, parameters) for v in value]
        return [v for v in items if v is not NO_VALUE]
    return value


def dashboard_metrics(body: dict[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
    """(namespace, metric, dimensions) of every metric of every widget (explicit form)."""
    found = []
    for widget in body["widgets"]:
        for metric in widget["properties"].get("metrics", []):
            fields = [field for field in metric if isinstance(field, str)]
            assert "." not in fields, metric  # each metric spelled out
            namespace, name, *dimensions = fields
            found.append(
                (namespace, name, dict(zip(dimensions[::2], dimensions[1::2], strict=True)))
            )
    return found


def test_status_queue_redrives_to_an_encrypted_dead_letter_queue(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    dlq = resources["StatusDeadLetterQueue"]
    assert dlq["Type"] == "AWS::SQS::Queue"
    assert dlq["Properties"]["KmsMasterKeyId"] == {
        "Fn::If": ["HasCustomerKey", {"Ref": "KmsKeyArn"}, "alias/aws/sqs"]
    }
    assert dlq["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert dlq["Properties"]["QueueName"] == {"Fn::Sub": "notifier-${Stage}-execution-status-dlq"}
    assert resources["StatusQueue"]["Properties"]["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["StatusDeadLetterQueue", "Arn"]},
        "maxReceiveCount": 5,
    }
    for output in ("StatusDeadLetterQueueUrl", "StatusDeadLetterQueueArn"):
        assert output in template["Outputs"]


def test_dashboard_body_is_json_covering_every_state_machine(packaged: tuple) -> None:
    template, _ = packaged
    (name,) = resources_of(template, "AWS::CloudWatch::Dashboard")
    properties = template["Resources"][name]["Properties"]
    assert properties["DashboardName"] == {"Fn::Sub": "notifier-${Stage}-workflows"}
    assert template["Outputs"]["DashboardName"]["Value"] == {"Ref": name}
    text = properties["DashboardBody"]["Fn::Sub"]
    assert isinstance(text, str)  # single-string Fn::Sub: every ${...} is the stack's own
    references = set(re.findall(r"\$\{([^}!]+)\}", text))
    known = set(template["Resources"]) | set(template["Parameters"]) | PSEUDO_PARAMETERS
    assert {reference.split(".")[0] for reference in references} <= known, references

    def value(match: re.Match[str]) -> str:  # what CloudFormation would put there
        reference = match.group(1)
        if reference in MACHINES:
            return f"arn:aws:states:us-east-1:123456789012:stateMachine:{reference}"
        if reference.endswith(".QueueName"):
            return "queue-" + reference.split(".")[0]
        return "us-east-1" if reference == "AWS::Region" else reference

    body = json.loads(re.sub(r"\$\{([^}!]+)\}", value, text))
    metrics = dashboard_metrics(body)
    for machine in MACHINES:
        arn = f"arn:aws:states:us-east-1:123456789012:stateMachine:{machine}"
        shown = {
            metric
            for namespace, metric, dimensions in metrics
            if namespace == "AWS/States" and dimensions == {"StateMachineArn": arn}
        }
        assert shown == STATES_METRICS, machine
    for queue in ("StatusDeadLetterQueue", "StatusUndeliveredQueue", "ApprovalDeadLetterQueue"):
        assert (
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            {"QueueName": f"queue-{queue}"},
        ) in metrics
    for widget in body["widgets"]:
        assert widget["properties"]["region"] == "us-east-1"
        assert widget["x"] + widget["width"] <= 24


def _metric_stat(query: dict[str, Any]) -> tuple[str, str, list[dict[str, Any]], int, str]:
    stat = query["MetricStat"]
    metric = stat["Metric"]
    return (
        metric["Namespace"],
        metric["MetricName"],
        metric["Dimensions"],
        stat["Period"],
        stat["Stat"],
    )


def test_every_state_machine_alarms_on_failed_or_timed_out_executions(
    template: dict[str, Any],
) -> None:
    alarms = resources_of(template, "AWS::CloudWatch::Alarm")
    for machine in MACHINES:
        dimensions = [{"Name": "StateMachineArn", "Value": {"Ref": machine}}]
        matching = [
            alarm["Properties"]
            for alarm in alarms.values()
            if any(
                "MetricStat" in q and q["MetricStat"]["Metric"]["Dimensions"] == dimensions
                for q in alarm["Properties"].get("Metrics", [])
            )
        ]
        assert len(matching) == 1, machine
        (alarm,) = matching
        queries = {q["Id"]: q for q in alarm["Metrics"]}
        stats = {q_id: _metric_stat(q) for q_id, q in queries.items() if "MetricStat" in q}
        assert sorted(stats.values()) == [
            ("AWS/States", "ExecutionsFailed", dimensions, 300, "Sum"),
            ("AWS/States", "ExecutionsTimedOut", dimensions, 300, "Sum"),
        ]
        assert all(queries[q_id]["ReturnData"] is False for q_id in stats)
        (returned,) = [q for q in queries.values() if q.get("ReturnData", True)]
        expression = returned["Expression"]
        assert set(re.findall(r"[A-Za-z_]\w*", expression)) - {"FILL"} == set(stats)
        assert "+" in expression
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert alarm["Threshold"] == 1
        assert alarm["EvaluationPeriods"] == 1
        assert alarm["TreatMissingData"] == "notBreaching"
        assert "${Stage}" in alarm["AlarmName"]["Fn::Sub"]


def test_the_dead_letter_queue_alarms_on_any_message(template: dict[str, Any]) -> None:
    alarm = template["Resources"]["StatusDeadLetterAlarm"]
    assert alarm["Type"] == "AWS::CloudWatch::Alarm"
    properties = alarm["Properties"]
    assert properties["Namespace"] == "AWS/SQS"
    assert properties["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert properties["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["StatusDeadLetterQueue", "QueueName"]}}
    ]
    assert properties["Period"] == 300
    assert properties["Statistic"] == "Maximum"
    assert properties["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert properties["Threshold"] == 1
    assert properties["EvaluationPeriods"] == 1
    # one alarm per state machine, this one, and those of the undelivered and approval DLQs
    assert len(resources_of(template, "AWS::CloudWatch::Alarm")) == len(MACHINES) + 3


@pytest.mark.parametrize("topic", ["", ALARM_TOPIC])
def test_alarms_notify_the_alarm_topic_only_when_one_is_given(
    template: dict[str, Any], topic: str
) -> None:
    parameter = template["Parameters"]["AlarmTopicArn"]
    assert parameter["Default"] == ""
    assert re.fullmatch(parameter["AllowedPattern"], topic)
    parameters = {"AlarmTopicArn": topic}
    assert condition_value(template, {"Condition": "HasAlarmTopic"}, parameters) is bool(topic)
    for name, alarm in resources_of(template, "AWS::CloudWatch::Alarm").items():
        properties = resolved(template, alarm["Properties"], parameters)
        for actions in ("AlarmActions", "OKActions"):
            if topic:
                assert properties[actions] == [topic], name
            else:
                assert actions not in properties, name
        assert "InsufficientDataActions" not in properties


def test_the_alarm_topic_parameter_refuses_what_is_not_a_topic(template: dict[str, Any]) -> None:
    pattern = template["Parameters"]["AlarmTopicArn"]["AllowedPattern"]
    for bad in ("notifier-alarms", "arn:aws:sqs:us-east-1:123456789012:q", " "):
        assert not re.fullmatch(pattern, bad), bad


# ---------------------------------------------------------------- the daemon's IAM policy
# config/iam-policy.json: what `notifier serve` needs at runtime against AWS (not what
# deploying the stack needs). Its tokens are replaced when it is attached to a role.

IAM_POLICY = Path(__file__).resolve().parents[2] / "config" / "iam-policy.json"
POLICY_TOKENS = {"ACCOUNT_ID", "REGION", "STAGE", "API_ID", "INSTANCE_ID"}
# Every action granted, and where the daemon makes the call that needs it.
EXECUTIONS = "notifier/requests/executions.py"
EXECUTION_READS = "notifier/requests/execution_reads.py"
PROCESS_DATA = "notifier/requests/process_data.py"
TOKENS = "notifier/aws/iot_tokens.py"
DAEMON_CALLS = {
    "s3:PutObject": [
        (PROCESS_DATA, "self._put_object("),
        ("notifier/aws/fast_operations.py", 'operation = "PutObject"'),
    ],
    "s3:GetObject": [
        (PROCESS_DATA, "self._s3.get_object("),
        (PROCESS_DATA, "self._s3.head_object("),  # HeadObject needs s3:GetObject
    ],
    # Without it HeadObject of an expired object is 403, not the 404 locate() expects.
    "s3:ListBucket": [(PROCESS_DATA, '"404", "NoSuchKey", "NotFound"')],
    "states:StartExecution": [
        (EXECUTIONS, "self._start_execution,"),
        ("notifier/aws/fast_operations.py", 'operation = "StartExecution"'),
    ],
    "states:StartSyncExecution": [
        (EXECUTIONS, "self._sfn.start_sync_execution"),
        ("notifier/app/wiring.py", "sync_sfn.start_sync_execution"),
    ],
    "states:DescribeExecution": [(EXECUTION_READS, "self._sfn.describe_execution(")],
    "states:StopExecution": [(EXECUTIONS, "self._sfn.stop_execution(")],
    "states:RedriveExecution": [(EXECUTIONS, "self._sfn.redrive_execution(")],
    "states:GetExecutionHistory": [
        (EXECUTION_READS, "self._sfn.get_execution_history("),
        ("notifier/dashboard/approvals.py", "self.sfn.get_execution_history("),
    ],
    "states:ListExecutions": [(EXECUTION_READS, "self._sfn.list_executions")],
    # The definition an execution runs, for the dashboard's graph of it.
    "states:DescribeStateMachineForExecution": [
        (EXECUTION_READS, "self._sfn.describe_state_machine_for_execution")
    ],
    # A rejection is an answer too: SendTaskSuccess with {"approved": false}.
    "states:SendTaskSuccess": [("notifier/dashboard/approvals.py", "self.sfn.send_task_success(")],
    "dynamodb:PutItem": [("notifier/dashboard/approval_table.py", "self.dynamodb.put_item(")],
    "dynamodb:UpdateItem": [("notifier/dashboard/approval_table.py", "self.dynamodb.update_item(")],
    "dynamodb:GetItem": [("notifier/dashboard/approval_table.py", "self.dynamodb.get_item(")],
    "dynamodb:Query": [("notifier/dashboard/approval_table.py", "self.dynamodb.query(")],
    "sns:Publish": [("notifier/dashboard/approval_links.py", "self.sns.publish(")],
    "iot:DescribeEndpoint": [
        ("notifier/app/wiring.py", 'describe_endpoint(endpointType="iot:Data-ATS")')
    ],
    "sqs:CreateQueue": [("notifier/sources/queue.py", "self.sqs.create_queue(")],
    "sqs:ReceiveMessage": [("notifier/aws/sqs.py", "self.sqs.receive_message(")],
    # DeleteMessageBatch is authorized as sqs:DeleteMessage.
    "sqs:DeleteMessage": [
        ("notifier/sources/queue.py", "self.sqs.delete_message_batch("),
        ("notifier/dashboard/approvals.py", "self.sqs.delete_message("),
    ],
    "sqs:ChangeMessageVisibility": [
        ("notifier/dashboard/approvals.py", "self.sqs.change_message_visibility("),
    ],
    "sqs:GetQueueUrl": [("notifier/sources/queue.py", "self.sqs.get_queue_url(")],
    "sqs:SendMessage": [("notifier/sources/queue.py", "self.sqs.send_message(")],
    # The last-seen tag of the own queue, and the dead-letter queue's depth for the metrics.
    "sqs:TagQueue": [("notifier/sources/queue.py", "self.sqs.tag_queue(")],
    "sqs:GetQueueAttributes": [("notifier/sources/queue.py", "self.sqs.get_queue_attributes(")],
    "execute-api:Invoke": [
        (TOKENS, 'SigV4Auth(credentials.get_frozen_credentials(), "execute-api"'),
        (TOKENS, '"/tokens/daemon/'),
        (TOKENS, '"/tokens/dashboard"'),
    ],
}
ROUTED_MACHINES = {"ProcessA", "Hello", "HelloExpress", "QC", "Archive"}
EXPRESS_ROUTES = {"HelloExpress"}  # Downstream is started by ProcessA


@pytest.fixture(scope="module")
def iam_policy() -> dict[str, Any]:
    return json.loads(IAM_POLICY.read_text(encoding="utf-8"))


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def statements_granting(policy: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in policy["Statement"] if action in as_list(s["Action"])]


def test_daemon_iam_policy_is_a_policy_document(iam_policy: dict[str, Any]) -> None:
    assert set(iam_policy) == {"Version", "Statement"}
    assert iam_policy["Version"] == "2012-10-17"
    sids = [statement["Sid"] for statement in iam_policy["Statement"]]
    assert len(set(sids)) == len(sids)
    for statement in iam_policy["Statement"]:
        assert re.fullmatch(r"[A-Za-z0-9]+", statement["Sid"]), statement["Sid"]
        assert statement["Effect"] == "Allow"
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
        for action in as_list(statement["Action"]):
            assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z]+", action), action  # no wildcards
        for resource in as_list(statement["Resource"]):
            if resource == "*":  # DescribeEndpoint has no resource-level permissions
                assert as_list(statement["Action"]) == ["iot:DescribeEndpoint"]
                continue
            assert resource.startswith("arn:aws:"), resource
            tokens = set(re.findall(r"\b[A-Z][A-Z_]{2,}\b", resource)) - {"POST"}
            assert tokens <= POLICY_TOKENS, resource


def test_daemon_iam_policy_grants_only_what_the_daemon_calls(iam_policy: dict[str, Any]) -> None:
    granted = {a for s in iam_policy["Statement"] for a in as_list(s["Action"])}
    assert granted == set(DAEMON_CALLS)
    root = IAM_POLICY.parents[1]
    for action, places in DAEMON_CALLS.items():
        for path, code in places:
            assert code in (root / path).read_text(encoding="utf-8"), (action, path, code)


def test_daemon_iam_policy_names_the_stacks_resources(
    template: dict[str, Any], iam_policy: dict[str, Any]
) -> None:
    from notifier.requests.descriptions import execution_arn

    values = {
        "ACCOUNT_ID": "123456789012",
        "REGION": "us-east-1",
        "STAGE": "dev",
        "API_ID": "abcdef1234",
        "INSTANCE_ID": "notifier-a",
    }
    pseudo = {"AWS::AccountId": "123456789012", "AWS::Region": "us-east-1", "Stage": "dev"}

    def filled(text: str) -> str:
        return re.sub("|".join(sorted(values, key=len, reverse=True)), lambda m: values[m[0]], text)

    def from_template(sub: dict[str, str]) -> str:
        return re.sub(r"\$\{([^}]+)\}", lambda m: pseudo[m[1]], sub["Fn::Sub"])

    def resources(action: str) -> list[str]:
        return [
            filled(r)
            for s in statements_granting(iam_policy, action)
            for r in as_list(s["Resource"])
        ]

    bucket = from_template(template["Resources"]["ProcessDataBucket"]["Properties"]["BucketName"])
    assert resources("s3:PutObject") == [f"arn:aws:s3:::{bucket}/*"]
    assert resources("s3:GetObject") == [f"arn:aws:s3:::{bucket}/*"]
    assert resources("s3:ListBucket") == [f"arn:aws:s3:::{bucket}"]
    (put,) = statements_granting(iam_policy, "s3:PutObject")  # as executions.start sends it
    assert put["Condition"] == {"StringEquals": {"s3:x-amz-server-side-encryption": "AES256"}}

    machines = {
        name[: -len("StateMachine")]: "arn:aws:states:us-east-1:123456789012:stateMachine:"
        + from_template(template["Resources"][name]["Properties"]["StateMachineName"])
        for name in MACHINES
    }
    assert sorted(resources("states:StartExecution")) == sorted(
        machines[m] for m in ROUTED_MACHINES - EXPRESS_ROUTES
    )
    assert resources("states:StartSyncExecution") == [machines[m] for m in EXPRESS_ROUTES]
    for action in (
        "states:DescribeExecution",
        "states:StopExecution",
        "states:RedriveExecution",
        "states:GetExecutionHistory",
        "states:DescribeStateMachineForExecution",
    ):
        patterns = resources(action)
        for machine, arn in machines.items():
            allowed = any(fnmatch(execution_arn(arn, "txn-1"), p) for p in patterns)
            assert allowed is (machine in ROUTED_MACHINES - EXPRESS_ROUTES), (action, machine)

    # The token route of the template's API, for this daemon's own subtopic only.
    resource = template["Resources"]["DaemonTokenResource"]["Properties"]
    assert resource["PathPart"] == "{subtopic}"
    deployment = template["Resources"]["TokenApiDeployment"]["Properties"]
    assert deployment["StageName"] == {"Ref": "Stage"}
    assert resources("execute-api:Invoke") == [
        "arn:aws:execute-api:us-east-1:123456789012:abcdef1234/dev/POST/tokens/daemon/notifier-a",
        "arn:aws:execute-api:us-east-1:123456789012:abcdef1234/dev/POST/tokens/dashboard",
    ]

    # The instance's own completion queue, named as the forwarder names it, and the DLQ.
    prefix = from_template(template["Outputs"]["CompletionQueuePrefix"]["Value"])
    own_queue = f"arn:aws:sqs:us-east-1:123456789012:{prefix}notifier-a"
    approvals = from_template(template["Resources"]["ApprovalQueue"]["Properties"]["QueueName"])
    approval_queue = f"arn:aws:sqs:us-east-1:123456789012:{approvals}"
    assert resources("sqs:CreateQueue") == [own_queue]
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage"):
        assert resources(action) == [own_queue, approval_queue]
    # The dashboard's approvals: the Archive workflow's queue, and its task tokens.
    assert resources("sqs:ChangeMessageVisibility") == [approval_queue]
    assert resources("states:SendTaskSuccess") == [machines["Archive"]]
    assert sorted(resources("states:ListExecutions")) == sorted(
        machines[m] for m in ROUTED_MACHINES - EXPRESS_ROUTES
    )
    # The approvals every instance shares: the table and its index of pending requests.
    table = from_template(template["Resources"]["ApprovalsTable"]["Properties"]["TableName"])
    table_arn = f"arn:aws:dynamodb:us-east-1:123456789012:table/{table}"
    (index,) = template["Resources"]["ApprovalsTable"]["Properties"]["GlobalSecondaryIndexes"]
    for action in ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:GetItem", "dynamodb:Query"):
        assert resources(action) == [table_arn, f"{table_arn}/index/{index['IndexName']}"]
    # The approval links go out on the approval topic, and nowhere else.
    topic = from_template(template["Resources"]["ApprovalTopic"]["Properties"]["TopicName"])
    assert resources("sns:Publish") == [f"arn:aws:sns:us-east-1:123456789012:{topic}"]
    dlq = from_template(template["Resources"]["StatusDeadLetterQueue"]["Properties"]["QueueName"])
    for action in ("sqs:GetQueueUrl", "sqs:SendMessage"):
        assert resources(action) == [f"arn:aws:sqs:us-east-1:123456789012:{dlq}"]


# ---------------------------------------------------------------- hardening

CUSTOMER_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OWN_KEY = {"Fn::GetAtt": ["EncryptionKey", "Arn"]}
# What EventBridge writes to: AWS-managed keys cannot be used there.
EVENTBRIDGE_WRITES = {"StatusTopic", "StatusQueue", "StatusUndeliveredQueue"}
CHECKOV = os.environ.get("CHECKOV") or str(
    Path(__file__).resolve().parents[2] / ".venv-checkov/bin/checkov"
)


def sub_text(template: dict[str, Any], value: Any) -> str:
    """A ``Fn::Sub`` string (or a GetAtt ..Arn) as CloudFormation would fill it in for the
    default parameters, in us-east-1 of account 123456789012."""
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return f"arn:aws:{value['Fn::GetAtt'][0]}"
    filled = {
        "AWS::Partition": "aws",
        "AWS::Region": "us-east-1",
        "AWS::AccountId": "123456789012",
    }

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        return filled.get(name) or str(template["Parameters"][name]["Default"])

    return re.sub(r"\$\{([^}]+)\}", one, value["Fn::Sub"])


@pytest.mark.parametrize("key", ["", CUSTOMER_KEY])
def test_every_topic_and_queue_is_encrypted_with_kms(template: dict[str, Any], key: str) -> None:
    parameters = {"KmsKeyArn": key}
    assert re.fullmatch(template["Parameters"]["KmsKeyArn"]["AllowedPattern"], key)
    own_key = template["Resources"]["EncryptionKey"]
    assert condition_value(template, {"Condition": own_key["Condition"]}, parameters) is (key == "")
    assert own_key["Properties"]["EnableKeyRotation"] is True
    encrypted = {
        **resources_of(template, "AWS::SNS::Topic"),
        **resources_of(template, "AWS::SQS::Queue"),
    }
    assert len(encrypted) == 3 + 5
    for name, resource in encrypted.items():
        properties = resolved(template, resource["Properties"], parameters)
        assert "SqsManagedSseEnabled" not in properties, name  # not a form scanners know
        if key:
            expected: Any = key
        elif name in EVENTBRIDGE_WRITES:
            expected = OWN_KEY
        else:
            expected = "alias/aws/sns" if resource["Type"] == "AWS::SNS::Topic" else "alias/aws/sqs"
        assert properties["KmsMasterKeyId"] == expected, name


def test_the_stack_key_lets_eventbridge_and_the_log_groups_use_it(template: dict[str, Any]) -> None:
    policy = template["Resources"]["EncryptionKey"]["Properties"]["KeyPolicy"]
    statements = {s["Sid"]: s for s in policy["Statement"]}
    assert statements["EventBridgeEncrypts"]["Principal"] == {"Service": "events.amazonaws.com"}
    assert set(statements["EventBridgeEncrypts"]["Action"]) == {
        "kms:GenerateDataKey",
        "kms:Decrypt",
    }
    logs = statements["LogsEncrypt"]
    assert logs["Principal"] == {"Service": {"Fn::Sub": "logs.${AWS::Region}.amazonaws.com"}}
    scope = logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
    assert sub_text(template, scope).endswith(":log-group:/aws/lambda/notifier-dev-*")
    for statement in policy["Statement"]:
        assert statement["Principal"] != "*" and statement["Principal"] != {"AWS": "*"}


def test_every_function_logs_to_a_group_with_retention(template: dict[str, Any]) -> None:
    functions = resources_of(template, "AWS::Lambda::Function")
    groups = resources_of(template, "AWS::Logs::LogGroup")
    named = {g["Properties"]["LogGroupName"]["Fn::Sub"]: g["Properties"] for g in groups.values()}
    assert set(named) == {f"/aws/lambda/${{{name}}}" for name in functions}
    for properties in named.values():
        assert properties["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        assert properties["KmsKeyId"] == {
            "Fn::If": ["HasCustomerKey", {"Ref": "KmsKeyArn"}, OWN_KEY]
        }
    assert template["Parameters"]["LogRetentionDays"]["Default"] >= 365
    # The functions may not create their groups themselves (without retention).
    for role in resources_of(template, "AWS::IAM::Role").values():
        for policy in role["Properties"]["Policies"]:
            for statement in policy["PolicyDocument"]["Statement"]:
                actions = as_list(statement.get("Action", []))  # none in an Fn::If
                assert "logs:CreateLogGroup" not in actions


def test_the_authorizer_has_reserved_concurrency(template: dict[str, Any]) -> None:
    function = template["Resources"]["TokenAuthorizerFunction"]["Properties"]
    assert function["ReservedConcurrentExecutions"] == {"Ref": "AuthorizerConcurrency"}
    assert template["Parameters"]["AuthorizerConcurrency"]["MinValue"] >= 1


def test_undelivered_status_events_land_in_a_queue_that_alarms(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    undelivered = {"Fn::GetAtt": ["StatusUndeliveredQueue", "Arn"]}
    # Lambda's asynchronous retries end there (only EventBridge invokes a function
    # asynchronously: the state machines, API Gateway and IoT wait for their answers).
    forwarder = resources["StatusForwarderFunction"]["Properties"]
    assert forwarder["DeadLetterConfig"] == {"TargetArn": undelivered}
    others = set(resources_of(template, "AWS::Lambda::Function")) - {"StatusForwarderFunction"}
    for name in others:
        assert "DeadLetterConfig" not in resources[name]["Properties"], name
    (policy,) = resources["StatusForwarderFunctionRole"]["Properties"]["Policies"]
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    assert statements["DeadLetterQueue"]["Action"] == "sqs:SendMessage"
    assert statements["DeadLetterQueue"]["Resource"] == undelivered
    assert statements["DeadLetterQueueKey"]["Resource"] == {
        "Fn::If": ["HasCustomerKey", {"Ref": "KmsKeyArn"}, OWN_KEY]
    }
    # So do the events EventBridge could not deliver to any of the rule's targets.
    for target in resources["StatusRule"]["Properties"]["Targets"]:
        assert target["DeadLetterConfig"] == {"Arn": undelivered}, target["Id"]
    queue_policy = resources["StatusUndeliveredQueuePolicy"]["Properties"]
    (statement,) = queue_policy["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Condition"] == {
        "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["StatusRule", "Arn"]}}
    }
    alarm = resources["StatusUndeliveredAlarm"]["Properties"]
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["StatusUndeliveredQueue", "QueueName"]}}
    ]
    assert (
        alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    )


def test_the_approval_queue_has_a_dead_letter_queue_that_alarms(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    redrive = resources["ApprovalQueue"]["Properties"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["ApprovalDeadLetterQueue", "Arn"]}
    assert redrive["maxReceiveCount"] >= 10  # a pending request survives daemon restarts
    alarm = resources["ApprovalDeadLetterAlarm"]["Properties"]
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["ApprovalDeadLetterQueue", "QueueName"]}}
    ]


def publish_policy(template: dict[str, Any], role: str) -> IotPolicy:
    """The iot:Publish statements of a role, its ARNs filled in, as a policy to evaluate."""
    statements = [
        {**s, "Resource": [sub_text(template, s["Resource"])]}
        for policy in template["Resources"][role]["Properties"]["Policies"]
        for s in policy["PolicyDocument"]["Statement"]
        if "iot:Publish" in as_list(s.get("Action", []))
    ]
    return IotPolicy.from_documents([json.dumps({"Statement": statements})])


@pytest.mark.parametrize("machine", MACHINES)
def test_workflows_publish_only_completions(template: dict[str, Any], machine: str) -> None:
    role = template["Resources"][machine]["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    policy = publish_policy(template, role)
    topic = "arn:aws:iot:us-east-1:123456789012:topic/"
    assert policy.allows("iot:Publish", topic + "notifier/notifier-a/txn-1")  # Notify's topic
    assert policy.allows("iot:Publish", topic + "notifier/default/txn-1")
    for refused in (
        "notifier/status/ProcessA/txn-1",  # the forwarder's status topics, for dashboards
        "notifier/status/txn-1",
        "notifier/txn-1",  # not <root>/<subtopic>/<execution>
        "other/notifier-a/txn-1",
    ):
        assert not policy.allows("iot:Publish", topic + refused), (machine, refused)


def test_the_forwarder_publishes_status_and_completions(template: dict[str, Any]) -> None:
    policy = publish_policy(template, "StatusForwarderFunctionRole")
    topic = "arn:aws:iot:us-east-1:123456789012:topic/"
    assert policy.allows("iot:Publish", topic + "notifier/status/ProcessA/txn-1")
    assert policy.allows("iot:Publish", topic + "notifier/notifier-a/txn-1")
    assert not policy.allows("iot:Publish", topic + "other/notifier-a/txn-1")


def test_every_checkov_skip_gives_a_one_line_reason(template: dict[str, Any]) -> None:
    skipped = [
        (name, skip)
        for name, resource in template["Resources"].items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert len(skipped) >= 60
    for name, skip in skipped:
        assert re.fullmatch(r"CKV_AWS_\d+", skip["id"]), name
        assert len(skip["comment"]) <= 160, (name, skip["id"])
    assert unexplained_skips(template) == []
    broken = json.loads(json.dumps(template))
    skips = broken["Resources"]["HelloFunction"]["Metadata"]["checkov"]["skip"]
    skips[0]["comment"] = " "
    del skips[1]["comment"]
    assert unexplained_skips(broken) == [
        f"[checkov] HelloFunction skips {skips[0]['id']} without a one-line reason",
        f"[checkov] HelloFunction skips {skips[1]['id']} without a one-line reason",
    ]


@pytest.fixture(scope="module")
def checkov() -> str:
    if not Path(CHECKOV).is_file():
        pytest.skip(f"no checkov at {CHECKOV} (make test and make lint install it)")
    return CHECKOV


def test_checkov_fails_the_lint_on_a_new_finding_and_on_a_skip_not_needed(
    template: dict[str, Any], checkov: str
) -> None:
    """Three changed resources of the template alone, with their skips: checkov checks each
    resource as it would in the whole template (make lint scans that), in seconds less. What
    their skips accept stays accepted; the rest is found, and so is a skip of a check that
    passes."""
    resources = json.loads(json.dumps(template["Resources"]))
    del resources["TokenAuthorizerFunction"]["Properties"]["ReservedConcurrentExecutions"]
    resources["StatusTopic"]["Properties"].pop("KmsMasterKeyId")
    # The authorizer has skips of its own; Hello skips the check that it reserves concurrency.
    assert resources["TokenAuthorizerFunction"]["Metadata"]["checkov"]["skip"]
    hello = resources["HelloFunction"]
    assert "CKV_AWS_115" in [skip["id"] for skip in hello["Metadata"]["checkov"]["skip"]]
    hello["Properties"]["ReservedConcurrentExecutions"] = 1
    changed = {
        "AWSTemplateFormatVersion": template["AWSTemplateFormatVersion"],
        "Resources": {
            name: resources[name]
            for name in ("TokenAuthorizerFunction", "StatusTopic", "HelloFunction")
        },
    }
    findings = checkov_findings(changed, checkov)
    assert len(findings) == 3, findings
    assert any("CKV_AWS_115 AWS::Lambda::Function.TokenAuthorizerFunction" in f for f in findings)
    assert any("CKV_AWS_26 AWS::SNS::Topic.StatusTopic" in f for f in findings)
    assert "[checkov] HelloFunction skips CKV_AWS_115, which it does not fail" in findings
