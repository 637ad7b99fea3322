"""Which executions the details endpoint shows, and that no task token gets out."""

from __future__ import annotations

import json

from notifier.config import RouteSettings
from notifier.requests.history import REDACTED, redact
from notifier.requests.ids import route_of

PREFIX = "arn:aws:states:us-east-1:123456789012"


def test_executions_are_matched_to_the_route_of_their_state_machine() -> None:
    routes = {
        "hello": RouteSettings(f"{PREFIX}:stateMachine:notifier-Hello", input="body"),
        "hello2": RouteSettings(f"{PREFIX}:stateMachine:notifier-Hello2", input="body"),
    }
    assert route_of(routes, f"{PREFIX}:execution:notifier-Hello:abc") == "hello"
    assert route_of(routes, f"{PREFIX}:execution:notifier-Hello2:abc") == "hello2"
    assert route_of(routes, f"{PREFIX}:execution:notifier-Other:abc") is None
    assert route_of(routes, "not an arn") is None


def test_task_tokens_are_redacted_wherever_they_are() -> None:
    token = "AQB8AAAAKgAAAAMAAAAA-secret"
    parameters = json.dumps({"QueueUrl": "q", "MessageBody": {"TaskToken": token, "n": 1}})
    value = {
        "history": [{"details": {"parameters": parameters}}, {"details": {"taskToken": token}}],
        "input": {"nested": [{"TaskToken": token}]},
    }
    redacted = redact(value)
    assert token not in json.dumps(redacted)
    assert json.loads(redacted["history"][0]["details"]["parameters"]) == {
        "QueueUrl": "q",
        "MessageBody": {"TaskToken": REDACTED, "n": 1},
    }
    assert redacted["input"] == {"nested": [{"TaskToken": REDACTED}]}


def test_strings_without_tokens_are_left_exactly_as_they_were() -> None:
    cause = '{"errorMessage":  "x",\n "stackTrace": []}'
    assert redact({"cause": cause, "n": [1, "[not json"]}) == {
        "cause": cause,
        "n": [1, "[not json"],
    }
