"""Stands in for Step Functions' own EventBridge integration, which moto lacks.

AWS puts a "Step Functions Execution Status Change" event on the default bus whenever an
execution of a STANDARD state machine changes status (an EXPRESS one has none). This bridge
observes moto's executions starting and ending and puts the same events, in AWS's shape, into moto's
EventBridge, from one background thread so that delivery never slows an execution down and
an execution's RUNNING event always precedes its final one.

Each event is put a fixed :data:`DELIVERY_LATENCY` after the change, as AWS delivers these
events asynchronously, a fraction of a second later. Without it the local status forwarder,
which runs in milliseconds, could overtake the workflow's own completion: its copy in the
instance's queue could reach the daemon before the Notify state's MQTT message, which in
AWS comes first.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

log = logging.getLogger("notifier.local.sfn_status_events")

DELIVERY_LATENCY = 0.2
"""Seconds from a status change to its event on the bus."""
MAX_EVENT_DATA = 248_000
"""Step Functions' 248 KB for an event's escaped input and output, read as 1,000-byte KB."""
DETAIL_TYPE = "Step Functions Execution Status Change"
SOURCE = "aws.states"


def _millis(value: datetime | None) -> int | None:
    return int(value.timestamp() * 1000) if value else None


def _escaped_size(text: str) -> int:
    """Bytes of ``text`` escaped as a JSON string, as it sits in the event."""
    return len(json.dumps(text).encode())


def status_change_detail(execution: Any, status: str) -> dict[str, Any]:
    """The event ``detail`` AWS sends when ``execution`` (moto parser) enters ``status``."""
    output = execution.output if status == "SUCCEEDED" else None
    input_text = json.dumps(execution.input_data)
    output_text = json.dumps(output) if output is not None else None
    output_size = _escaped_size(output_text) if output_text is not None else 0
    output_included = output_size <= MAX_EVENT_DATA
    input_included = _escaped_size(input_text) + output_size <= MAX_EVENT_DATA
    return {
        "executionArn": execution.exec_arn,
        "stateMachineArn": execution.state_machine.arn,
        "name": execution.name,
        "status": status,
        "startDate": _millis(execution.start_date),
        "stopDate": _millis(execution.stop_date) if status != "RUNNING" else None,
        "input": input_text if input_included else None,
        "output": output_text if output_included else None,
        "inputDetails": {"included": input_included},
        "outputDetails": {"included": output_included} if output is not None else None,
        "error": execution.error if status != "RUNNING" else None,
        "cause": execution.cause if status != "RUNNING" else None,
    }


class StatusChangeEmitter:
    """Puts status-change events into moto's EventBridge, in order, off the execution thread."""

    def __init__(self) -> None:
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sfn-status-events")

    def emit(self, execution: Any, status: str) -> None:
        detail = status_change_detail(execution, status)
        due = time.monotonic() + DELIVERY_LATENCY
        self._sender.submit(self._put, due, execution.account_id, execution.region_name, detail)

    @staticmethod
    def _put(due: float, account_id: str, region: str, detail: dict[str, Any]) -> None:
        from moto.events.models import events_backends

        time.sleep(max(0.0, due - time.monotonic()))
        try:
            events_backends[account_id][region].put_events(
                [
                    {
                        "Source": SOURCE,
                        "DetailType": DETAIL_TYPE,
                        "Detail": json.dumps(detail),
                        "Resources": [detail["executionArn"]],
                    }
                ]
            )
        except Exception:
            log.exception("could not deliver status change of %s", detail["executionArn"])

    def close(self) -> None:
        self._sender.shutdown(wait=True)


def install(emitter: StatusChangeEmitter) -> None:
    """Emit an event when any moto execution starts and when it ends."""
    from moto.stepfunctions.parser.backend.execution import (
        BaseExecutionWorkerCommunication,
        Execution,
        SyncExecution,
    )

    original_start = Execution.start
    original_terminated = BaseExecutionWorkerCommunication.terminated

    def emits_events(execution: Any) -> bool:
        """Only Standard workflows have status events; Express ones (sync or not) none."""
        return not isinstance(execution, SyncExecution) and execution.sm_type != "EXPRESS"

    def start(self: Any) -> None:
        # Queued before the worker starts, so that RUNNING is always sent before the end.
        if emits_events(self):
            emitter.emit(self, "RUNNING")
        original_start(self)

    def terminated(self: Any) -> None:
        original_terminated(self)
        if emits_events(self.execution):
            emitter.emit(self.execution, self.execution.exec_status.value)

    Execution.start = start  # type: ignore[method-assign]  # moto patched
    BaseExecutionWorkerCommunication.terminated = terminated  # type: ignore[method-assign]  # moto patched
