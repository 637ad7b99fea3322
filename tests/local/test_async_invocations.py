"""The local stack's asynchronous Lambda invocations: retried twice, then dead-lettered, as
Lambda does; abandoned when the stack stops. (End to end, with the status forwarder:
tests/local/test_forwarder.py.)"""

from __future__ import annotations

import json
import threading

import pytest

from notifier.local.eventbridge_targets import AsyncInvocations
from tests.support.eventually import EVENTUALLY

DEAD_LETTER_QUEUE = "arn:aws:sqs:us-east-1:123456789012:dlq"
QUICK_RETRIES = (0.01, 0.02)


class FailingFunction:
    """A moto ``LambdaFunction`` as the invocations see it, failing its first ``failures``
    invocations: as an error the handler returned, or, with ``raises``, as the runtime
    failing to run it at all."""

    function_arn = "arn:aws:lambda:us-east-1:123456789012:function:f"

    def __init__(
        self, failures: int, dead_letter: str | None = DEAD_LETTER_QUEUE, raises: bool = False
    ) -> None:
        self.failures = failures
        self.raises = raises
        self.events: list[str] = []
        self.invoked = threading.Event()
        self.dead_letter_config = {"TargetArn": dead_letter} if dead_letter else None

    def _invoke_lambda(self, event: str) -> tuple[str, bool, str]:
        self.events.append(event)
        self.invoked.set()
        if len(self.events) > self.failures:
            return "{}", False, ""
        if self.raises:
            raise OSError(f"failure {len(self.events)}")
        return json.dumps({"errorMessage": f"failure {len(self.events)}"}), True, ""


DeadLetters = list[tuple[str, str, dict[str, str]]]


def run(function: FailingFunction, dead_letters: DeadLetters) -> None:
    """One asynchronous invocation of ``function``, to its end."""
    invocations = AsyncInvocations(lambda *sent: dead_letters.append(sent), QUICK_RETRIES)
    try:
        submitted = invocations.submit(function, '{"e": 1}')
        assert submitted is not None
        submitted.result(EVENTUALLY)
    finally:
        invocations.close()


@pytest.mark.parametrize("raises", [False, True])
@pytest.mark.parametrize(
    ("failures", "attempts", "kept"), [(0, 1, False), (2, 3, False), (3, 3, True)]
)
def test_a_failed_invocation_is_retried_twice_then_its_event_kept(
    failures: int, attempts: int, kept: bool, raises: bool
) -> None:
    function = FailingFunction(failures, raises=raises)
    dead_letters: DeadLetters = []
    run(function, dead_letters)
    assert function.events == ['{"e": 1}'] * attempts
    if kept:
        ((queue, body, attributes),) = dead_letters
        assert (queue, body) == (DEAD_LETTER_QUEUE, '{"e": 1}')
        # Lambda's attributes: the request, the status of the Invoke, the function's error.
        assert attributes["ErrorCode"] == "200"
        assert "failure 3" in attributes["ErrorMessage"]
        assert attributes["RequestID"]
    else:
        assert dead_letters == []


def test_without_a_dead_letter_queue_a_failed_event_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    function = FailingFunction(3, dead_letter=None)
    dead_letters: DeadLetters = []
    run(function, dead_letters)
    assert len(function.events) == 3
    assert dead_letters == []
    assert "event dropped after its retries (no dead-letter queue)" in caplog.text


def test_a_dead_letter_queue_that_refuses_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(*sent: object) -> None:
        raise KeyError("no such queue")

    invocations = AsyncInvocations(refuse, QUICK_RETRIES)
    submitted = invocations.submit(FailingFunction(3), "{}")
    assert submitted is not None
    submitted.result(EVENTUALLY)  # the thread survives it
    invocations.close()
    assert "event lost, its dead-letter queue refused it" in caplog.text


def test_closing_abandons_waiting_retries_and_new_events() -> None:
    """When the stack stops, a retry waiting its turn is given up, not dead-lettered (the
    queues stop with the stack), and no new invocation starts."""
    function = FailingFunction(failures=10)
    dead_letters: DeadLetters = []
    invocations = AsyncInvocations(lambda *sent: dead_letters.append(sent), (3600.0, 3600.0))
    submitted = invocations.submit(function, "{}")
    assert submitted is not None
    assert function.invoked.wait(EVENTUALLY)
    invocations.close()
    submitted.result(EVENTUALLY)  # ended: it did not wait the hour
    assert invocations.submit(function, "{}") is None
    assert (len(function.events), dead_letters) == (1, [])
