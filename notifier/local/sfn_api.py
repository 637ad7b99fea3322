"""Stands in for the parts of the Step Functions API that moto gets wrong.

- StartExecution without a name: AWS names the execution with a fresh UUID; moto names
  it "None", so the second such call fails with ExecutionAlreadyExists.
- SendTaskFailure: moto passes the error on to the execution but not the cause, so a
  rejected human approval would end FAILED without the reason the approver gave.
- StopExecution of an execution waiting for a task token: moto's wait ignores the stop and
  the execution stays RUNNING until the token times out; AWS aborts it at once.
- GetExecutionHistory: moto answers every event at once, in order, whatever
  ``maxResults``, ``reverseOrder`` and ``nextToken`` say; AWS answers pages.
- RedriveExecution, which moto lacks: here a redriven execution runs again from its
  start, under the same ARN and with the same input, and its earlier history is replaced.
  AWS resumes it from the state that failed, keeping what the states before it did, and
  adds to its history; to the daemon both look alike (RUNNING again, then a new end).
- Express state machines: moto records every state machine as STANDARD (its
  CloudFormation drops ``StateMachineType``), and has no StartSyncExecution. Here the type
  is kept, and StartSyncExecution runs an Express workflow to its end with moto's own
  interpreter (its ``SyncExecution``) and answers as AWS does. The execution is not kept:
  Express executions have no DescribeExecution or history, and StartExecution of a
  Standard state machine is ``StateMachineTypeNotSupported``.
"""

from __future__ import annotations

import base64
import copy
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

STOP_CHECK_SECONDS = 0.25
"""How often a wait for a task token looks whether its execution was stopped."""


def install() -> None:
    from moto.core.responses import EmptyResult
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend
    from moto.stepfunctions.responses import StepFunctionResponse

    original_start = StepFunctionsParserBackend.start_execution

    def start_execution(self: Any, state_machine_arn: str, name: Any = None, *args: Any) -> Any:
        return original_start(self, state_machine_arn, name or str(uuid.uuid4()), *args)

    def send_task_failure(self: Any) -> Any:
        self.stepfunction_backend.send_task_failure(
            self._get_param("taskToken"),
            error=self._get_param("error"),
            cause=self._get_param("cause"),
        )
        return EmptyResult()

    StepFunctionsParserBackend.start_execution = start_execution  # type: ignore[method-assign,assignment]  # moto patched
    StepFunctionResponse.send_task_failure = send_task_failure  # type: ignore[method-assign]  # moto patched
    _stop_ends_task_token_waits()
    _express_state_machines()
    _paged_histories()
    _redrives()


def _redrives() -> None:
    from moto.core.exceptions import AWSError
    from moto.core.responses import ActionResult
    from moto.stepfunctions.parser.api import ExecutionStatus
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend
    from moto.stepfunctions.responses import StepFunctionResponse

    class ExecutionNotRedrivable(AWSError):
        TYPE = "ExecutionNotRedrivable"
        STATUS = 400

    unsuccessful = (ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT, ExecutionStatus.ABORTED)

    def redrive_execution(self: Any, execution_arn: str) -> datetime:
        execution = self.describe_execution(execution_arn)
        if execution.sm_type == "EXPRESS" or execution.exec_status not in unsuccessful:
            raise ExecutionNotRedrivable(
                f"Execution is {execution.exec_status} and cannot be redriven: {execution_arn}"
            )
        execution.exec_worker = None
        execution.stop_date = execution.output = execution.error = execution.cause = None
        execution.redrive_count = getattr(execution, "redrive_count", 0) + 1
        execution.redrive_date = datetime.now(UTC)
        execution.start()
        return execution.redrive_date  # type: ignore[no-any-return]  # moto's execution

    def redrive_execution_response(self: Any) -> Any:
        redriven = self.stepfunction_backend.redrive_execution(self._get_param("executionArn"))
        return ActionResult({"redriveDate": redriven})

    StepFunctionsParserBackend.redrive_execution = redrive_execution  # type: ignore[attr-defined]  # beside moto's own
    StepFunctionResponse.redrive_execution = redrive_execution_response  # type: ignore[attr-defined]  # beside moto's own


HISTORY_PAGE = 100
"""Events a GetExecutionHistory page has without ``maxResults`` (AWS's default)."""


def _paged_histories() -> None:
    from moto.core.exceptions import AWSError
    from moto.core.responses import ActionResult
    from moto.stepfunctions.responses import StepFunctionResponse

    class InvalidToken(AWSError):
        TYPE = "InvalidToken"
        STATUS = 400

    def get_execution_history(self: Any) -> Any:
        arn = self._get_param("executionArn")
        events = self.stepfunction_backend.get_execution_history(arn)["events"]
        if self._get_param("reverseOrder"):
            events = events[::-1]
        limit = int(self._get_param("maxResults") or HISTORY_PAGE)
        token = self._get_param("nextToken")
        start = 0
        if token:
            try:
                paged_arn, _, offset = base64.urlsafe_b64decode(token).decode().rpartition("#")
                start = int(offset)
            except (ValueError, UnicodeDecodeError):
                paged_arn = ""
            if paged_arn != arn:
                raise InvalidToken("Invalid Token")
        page: dict[str, Any] = {"events": events[start : start + limit]}
        if start + limit < len(events):
            page["nextToken"] = base64.urlsafe_b64encode(f"{arn}#{start + limit}".encode()).decode()
        return ActionResult(page)

    StepFunctionResponse.get_execution_history = get_execution_history  # type: ignore[method-assign]  # moto patched


def _express_state_machines() -> None:
    from moto.core.exceptions import AWSError
    from moto.core.responses import ActionResult
    from moto.stepfunctions.models import StateMachine
    from moto.stepfunctions.parser.api import StateMachineType
    from moto.stepfunctions.parser.backend.execution import SyncExecution
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend
    from moto.stepfunctions.responses import StepFunctionResponse

    class StateMachineTypeNotSupported(AWSError):
        TYPE = "StateMachineTypeNotSupported"
        STATUS = 400

    original_init = StateMachine.__init__
    original_from_template = StateMachine.create_from_cloudformation_json

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.sm_type = StateMachineType(self.type)

    def from_template(
        cls: Any, /, name: str, template: Any, account_id: str, region: str, **kwargs: Any
    ) -> Any:
        machine = original_from_template(name, template, account_id, region, **kwargs)
        machine.type = template["Properties"].get("StateMachineType", "STANDARD")
        machine.sm_type = StateMachineType(machine.type)
        return machine

    def start_sync_execution(
        self: Any, state_machine_arn: str, name: str | None, execution_input: Any
    ) -> Any:
        machine = self.describe_state_machine(state_machine_arn)
        if machine.type != "EXPRESS":
            raise StateMachineTypeNotSupported(
                "This operation is not supported by this type of state machine"
            )
        name = name or str(uuid.uuid4())
        prefix = state_machine_arn.replace(":stateMachine:", ":express:")
        execution = SyncExecution(
            name=name,
            sm_type=machine.sm_type,
            role_arn=machine.roleArn,
            exec_arn=f"{prefix}:{name}:{uuid.uuid4()}",
            account_id=self.account_id,
            region_name=self.region_name,
            # A snapshot of the definition, as StartExecution takes, without the executions.
            state_machine=copy.deepcopy(
                machine, {id(machine.executions): [], id(machine.backend): machine.backend}
            ),
            start_date=datetime.now(UTC),
            cloud_watch_logging_session=None,
            # moto's own parameter parsing may have decoded the JSON already
            input_data=(
                execution_input if isinstance(execution_input, str) else json.dumps(execution_input)
            ),
            trace_header=None,
            activity_store={},
        )
        execution.start()  # runs to the end in this thread: the sync worker
        return execution.to_start_sync_execution_output()

    def start_sync_execution_response(self: Any) -> Any:
        return ActionResult(
            self.stepfunction_backend.start_sync_execution(
                self._get_param("stateMachineArn"),
                self._get_param("name"),
                self._get_param("input", if_none="{}"),
            )
        )

    StateMachine.__init__ = init  # type: ignore[method-assign]  # moto patched
    StateMachine.create_from_cloudformation_json = classmethod(from_template)  # type: ignore[assignment,method-assign]  # moto patched
    StepFunctionsParserBackend.start_sync_execution = start_sync_execution  # type: ignore[attr-defined]  # beside moto's own
    StepFunctionResponse.start_sync_execution = start_sync_execution_response  # type: ignore[attr-defined]  # beside moto's own


def _stop_ends_task_token_waits() -> None:
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_callback as callback_task,
    )
    from moto.stepfunctions.parser.asl.eval.callback.callback import CallbackOutcomeTimedOut

    task = callback_task.StateTaskServiceCallback
    original_wait = task._eval_wait_for_task_token

    def wait_while_running(
        self: Any, env: Any, timeout_seconds: Any, callback_endpoint: Any, heartbeat_endpoint: Any
    ) -> Any:
        if heartbeat_endpoint is not None:  # moto's heartbeat wait already checks for a stop
            return original_wait(self, env, timeout_seconds, callback_endpoint, heartbeat_endpoint)
        deadline = time.monotonic() + timeout_seconds if timeout_seconds else None
        while env.is_running():
            slice_ = STOP_CHECK_SECONDS
            if deadline is not None:
                slice_ = min(slice_, max(0.0, deadline - time.monotonic()))
            outcome = callback_endpoint.wait(timeout=slice_)
            if outcome is not None:
                return outcome
            if deadline is not None and time.monotonic() >= deadline:
                return CallbackOutcomeTimedOut(callback_id=callback_endpoint.callback_id)
        # Stopped: a plain result, not an outcome, so that no timeout error overrides the
        # stop; nothing runs after it.
        return {}

    task._eval_wait_for_task_token = wait_while_running  # type: ignore[method-assign]  # moto patched
