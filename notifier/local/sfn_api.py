"""Stands in for the parts of the Step Functions API that moto gets wrong.

- StartExecution without a name: AWS names the execution with a fresh UUID; moto names
  it "None", so the second such call fails with ExecutionAlreadyExists.
- SendTaskFailure: moto passes the error on to the execution but not the cause, so a
  rejected human approval would end FAILED without the reason the approver gave.
"""

from __future__ import annotations

import uuid
from typing import Any


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

    StepFunctionsParserBackend.start_execution = start_execution  # type: ignore[method-assign]
    StepFunctionResponse.send_task_failure = send_task_failure  # type: ignore[method-assign]
