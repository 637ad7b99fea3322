"""A completion is believed only from the execution this daemon started: whoever may start
a workflow cannot answer another instance's held request by naming an execution after it."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from notifier.app.state import METRICS
from notifier.daemon import Daemon
from notifier.local.stack import LocalStack
from notifier.requests.waiters import Transaction
from tests.support.daemons import call
from tests.support.eventually import eventually

LONG = {"Prefer": "wait=110"}


async def test_a_workflow_named_after_a_held_transaction_cannot_answer_it(
    stack: LocalStack, daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    victim = asyncio.ensure_future(
        call(http, "POST", f"{daemon.url}/p1", json={"foo": "victim"}, headers=LONG)
    )

    def held() -> list[Transaction]:
        return [t for t in daemon.registry.unresolved() if t.route == "p1" and t.started_at]

    await eventually(lambda: len(held()) == 1)
    (txn,) = held()
    # Anyone allowed to start Hello starts it under the victim's transaction id, with the
    # victim's subtopic: Hello publishes SUCCEEDED, with this input as its output, to the
    # victim's completion topic (and the forwarder to its queue).
    async with stack.aws().client("stepfunctions") as sfn:
        forged = await sfn.start_execution(
            stateMachineArn=daemon.settings.routes["hello"].state_machine,
            name=txn.txn_id,
            input=json.dumps({"subtopic": daemon.instance_id, "forged": True}),
        )
    metrics = daemon.app[METRICS].registry

    def rejected() -> float:
        labels = {"reason": "other_execution"}
        return metrics.get_sample_value("notifier_completions_rejected_total", labels) or 0.0

    await eventually(lambda: rejected() >= 1)
    status, _, body = await victim
    assert status == 200, body
    assert body["executionArn"] == txn.execution_arn != forged["executionArn"]
    assert "forged" not in json.dumps(body)
    assert body["processData"]["foo"] == "victim"
    assert body["completedVia"] in ("mqtt", "sqs")
