"""Stands in for a part of the Step Functions API that moto's request handler drops.

moto's SendTaskFailure handler passes the error on to the execution but not the cause, so
a rejected human approval ends FAILED without the reason the approver gave. The handler
below passes both, as AWS does.
"""

from __future__ import annotations

from typing import Any


def install() -> None:
    from moto.core.responses import EmptyResult
    from moto.stepfunctions.responses import StepFunctionResponse

    def send_task_failure(self: Any) -> Any:
        self.stepfunction_backend.send_task_failure(
            self._get_param("taskToken"),
            error=self._get_param("error"),
            cause=self._get_param("cause"),
        )
        return EmptyResult()

    StepFunctionResponse.send_task_failure = send_task_failure  # type: ignore[method-assign]
