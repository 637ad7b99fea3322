"""Stands in for the atomicity of AWS's conditional writes, which moto's threaded server
lacks: it checks a condition and writes in two steps, so two requests at once can both pass.

- DynamoDB PutItem, UpdateItem, DeleteItem and TransactWriteItems with a condition: one
  wins, the other gets ConditionalCheckFailedException (a decision taken once).
- S3 PutObject with ``If-None-Match``/``If-Match``: one writes, the other gets 412 (the
  process data of a keyed transaction stored once).
- Step Functions StartExecution: one execution per name, whoever asks at the same moment.

Each such call runs alone, under one lock per service (for S3, only conditional PutObjects).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any


def install() -> None:
    from moto.dynamodb.models import DynamoDBBackend
    from moto.s3.responses import S3Response
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    dynamodb, s3, sfn = threading.Lock(), threading.Lock(), threading.Lock()
    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        setattr(DynamoDBBackend, name, _alone(getattr(DynamoDBBackend, name), dynamodb))
    S3Response.put_object = _alone(  # type: ignore[method-assign]  # moto patched
        S3Response.put_object, s3, when=_conditional_put
    )
    StepFunctionsParserBackend.start_execution = _alone(  # type: ignore[method-assign]  # moto patched
        StepFunctionsParserBackend.start_execution, sfn
    )


def _conditional_put(response: Any) -> bool:
    return bool(response.headers.get("If-None-Match") or response.headers.get("If-Match"))


def _alone(
    method: Callable[..., Any],
    lock: threading.Lock,
    when: Callable[[Any], bool] = lambda _: True,
) -> Callable[..., Any]:
    @functools.wraps(method)
    def alone(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not when(self):
            return method(self, *args, **kwargs)
        with lock:
            return method(self, *args, **kwargs)

    return alone
