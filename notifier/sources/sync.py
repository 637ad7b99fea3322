"""Express workflows' own answers: StartSyncExecution calls, each completing its transaction.

StartSyncExecution returns when the workflow has ended, with what DescribeExecution would
say of a Standard one (status, output, error, cause, stop date). Each call runs in a task
owned by :class:`SyncRuns`, whichever request started it: a request whose hold ends first
gets its 202 and the call goes on, so its answer still completes the transaction
(``via="sync"``) for a later re-attach at this instance. While the call is in flight, it is
the answer to give: the workflow's own Notify message, which usually arrives over MQTT a
moment before the call returns, is held back (by the registry) and answers only if the
call fails (a cut connection, a timeout, this instance stopping).

A call that fails (AWS error, throttling, a cut connection) returns the :class:`AwsError`
from its task rather than raising it, so that the request that started it can answer with
it when it failed at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from notifier.aws.errors import AwsError
from notifier.lifecycle import Service
from notifier.requests.descriptions import completion_from_description
from notifier.requests.waiters import Registry, Transaction

log = logging.getLogger(__name__)


class SyncRuns(Service):
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._tasks: set[asyncio.Task[AwsError | None]] = set()

    def run(
        self, txn: Transaction, call: Awaitable[dict[str, Any]]
    ) -> asyncio.Task[AwsError | None]:
        """Await ``call`` (a StartSyncExecution) in a task of its own; its answer resolves
        ``txn``. The task's result is the call's error, if it failed."""
        task = asyncio.get_running_loop().create_task(
            self._run(txn, call), name=f"sync-{txn.txn_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def _run(self, txn: Transaction, call: Awaitable[dict[str, Any]]) -> AwsError | None:
        txn.sync_call = True
        try:
            answer = await call
        except AwsError as exc:
            log.warning(
                "StartSyncExecution failed: %s",
                exc,
                extra={"txnId": txn.txn_id, "executionArn": txn.execution_arn},
            )
            return exc
        else:
            txn.sync_call = False
            self.registry.resolve(txn.txn_id, completion_from_description(answer, via="sync"))
            return None
        finally:
            # Without its answer, what another source brought (the workflow's own MQTT
            # message) is the answer.
            txn.sync_call = False
            if txn.held_back is not None:
                self.registry.resolve(txn.txn_id, txn.held_back)

    async def start(self) -> None:
        """Nothing runs until a request starts a call."""

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
