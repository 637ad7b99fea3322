"""The Hello workflow's one task: answer the input with a greeting added."""

from __future__ import annotations

from typing import Any

GREETING = "Hello 102 Class"


def say_hello(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return {**event, "taskresult": GREETING}
