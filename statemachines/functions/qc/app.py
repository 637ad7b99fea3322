"""Steps of the QC workflow: seed a summary row, three QC checks, a collector.

The summary row lives in a DynamoDB table keyed by GroupID (hash) and
StartTime (range). The state machine runs the three checks in parallel and
publishes the collector's summary to SNS itself.

Environment:
    QC_SUMMARY_TABLE    name of the QC summary table
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import boto3

REQUIRED_FIELDS = ("GroupID", "StreamID")
CHECKS = ("QC1", "QC2", "QC3")


class ValidationError(Exception):
    """The execution input lacks a required field."""


@functools.cache
def table() -> Any:
    """The summary table, with its client, for the life of the container."""
    return boto3.resource("dynamodb").Table(os.environ["QC_SUMMARY_TABLE"])


def validate(event: dict[str, Any]) -> None:
    for field in REQUIRED_FIELDS:
        value = event.get(field)
        if not isinstance(value, str) or not value:
            raise ValidationError(f"{field} is missing or not a non-empty string")


def start_qc(event: dict[str, Any], context: Any = None) -> dict[str, str]:
    """Seed the summary row; its key (GroupID, StartTime) travels on to the other steps."""
    validate(event)
    row = {
        "GroupID": event["GroupID"],
        "StartTime": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "StreamID": event["StreamID"],
        "ProcessID": str(uuid.uuid4()),
        "Status": "RUNNING",
    }
    table().put_item(Item=row)
    return {key: row[key] for key in ("GroupID", "StreamID", "StartTime", "ProcessID")}


def run_check(name: str, qc: dict[str, Any], seconds: float) -> dict[str, Any]:
    time.sleep(seconds)  # stands in for the real work on the stream data
    passed = True
    table().update_item(
        Key={"GroupID": qc["GroupID"], "StartTime": qc["StartTime"]},
        UpdateExpression="SET #check = :passed",
        ExpressionAttributeNames={"#check": f"{name}Pass"},
        ExpressionAttributeValues={":passed": passed},
    )
    return {"check": name, "pass": passed}


def qc_process1(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return run_check("QC1", event, 0.1)


def qc_process2(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return run_check("QC2", event, 1.0)


def qc_process3(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return run_check("QC3", event, 0.1)


def end_qc(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Collect the checks' results into the total, on the row and in the returned summary.

    Event: {"qc": <start_qc's result>, "checks": [<run_check's result>, ...]}
    """
    qc = event["qc"]
    checks = {check["check"]: bool(check["pass"]) for check in event["checks"]}
    total_pass = len(checks) == len(CHECKS) and all(checks.values())
    table().update_item(
        Key={"GroupID": qc["GroupID"], "StartTime": qc["StartTime"]},
        UpdateExpression="SET TotalPass = :total, #status = :status",
        ExpressionAttributeNames={"#status": "Status"},
        ExpressionAttributeValues={":total": total_pass, ":status": "COMPLETE"},
    )
    return {**qc, "Checks": checks, "TotalPass": total_pass}
