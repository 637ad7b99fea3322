"""Completions that came as pointers: the output is fetched, then the request answered.

An execution's output may be up to 256 KiB; an IoT message carries at most 128 KB. A
completion too large to publish comes as a pointer instead, ``"fetchOutput": true`` and no
output, by MQTT or the queue (see docs/completion-messages.md). The registry hands each
authentic pointer to an unresolved transaction here; :class:`OutputFetcher` describes the
execution through the :class:`~notifier.sources.describe.Describer`, the one place held
transactions are described (sharing its rate limit), and the description resolves the
transaction as a completion of the path the pointer came by. A held request is never
answered with a pointer's missing output.

One fetch per transaction at a time, however many pointers arrive. A fetch that fails is
tried again, backing off, while someone waits; when nobody does, it stops (a re-attach asks
Step Functions itself).
"""

from __future__ import annotations

import asyncio
import logging

from notifier.lifecycle import BackgroundTasks, Service
from notifier.requests.waiters import Completion, Registry, Transaction
from notifier.sources.describe import Describer

log = logging.getLogger(__name__)


class OutputFetcher(Service):
    def __init__(
        self,
        registry: Registry,
        describer: Describer,
        *,
        retry_min: float = 1.0,
        retry_max: float = 30.0,
    ) -> None:
        self.describer = describer
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.pointers = 0
        """Pointers whose output was fetched (or is being)."""
        self.failures = 0
        """Fetches that got no answer and were tried again."""
        self._fetching: set[str] = set()
        self._tasks = BackgroundTasks()
        registry.on_pointer.append(self._pointed)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        await self._tasks.stop()

    def _pointed(self, txn: Transaction, completion: Completion) -> None:
        if txn.txn_id in self._fetching:
            return
        self.pointers += 1
        self._fetching.add(txn.txn_id)
        self._tasks.once(f"fetch-output-{txn.txn_id}", self._fetch(txn, completion.via))

    async def _fetch(self, txn: Transaction, via: str) -> None:
        delay = self.retry_min
        about = {"txnId": txn.txn_id, "executionArn": txn.execution_arn}
        try:
            while not _resolved(txn) and txn.waiters:
                status = await self.describer.describe(txn, via=via, unless=lambda: not txn.waiters)
                if _resolved(txn):
                    return
                self.failures += 1
                log.info(
                    "the output of a completion that came as a pointer could not be fetched "
                    "(status %s); trying again in %.0f s", status, delay, extra=about,
                )  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
        finally:
            self._fetching.discard(txn.txn_id)


def _resolved(txn: Transaction) -> bool:
    """Whether ``txn`` has its completion (a fetch, or any other path, brought it)."""
    return txn.completion is not None
