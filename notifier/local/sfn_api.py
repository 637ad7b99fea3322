"""Stands in for the parts of the Step Functions API that moto gets wrong.

- StartExecution without a name: AWS names the execution with a fresh UUID; moto names
  it "None", so the second such call fails with ExecutionAlreadyExists.
- SendTaskFailure: moto passes the error on to the execution but not the cause, so a
  rejected human approval would end FAILED without the reason the approver gave.
- StopExecution of an execution waiting for a task token: moto's wait ignores the stop and
  the execution stays RUNNING until the token times out; AWS aborts it at once.
"""

from __future__ import annotations

import time
import uuid
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
