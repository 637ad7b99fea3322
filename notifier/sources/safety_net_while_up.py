"""The safety net while MQTT is up: a lost completion costs seconds or a sweep, not forever.

MQTT (and the queue) may still lose a completion while everything looks healthy: a Notify
publish that failed and was caught, a forwarder that swallowed its error, EventBridge's
best-effort delivery, a broker that stopped delivering. Three rare checks close that gap,
each one DescribeExecution through the shared rate limit, none made while completions
arrive as they should:

- a held request still unresolved at its hold deadline is described once before its 202
  (unless Step Functions was asked about it during the hold already), waiting at most
  ``DEADLINE_PATIENCE`` seconds for its turn at the rate limit;
- a re-attach to a known, unresolved transaction that nothing has been heard of for
  ``sweep_after`` seconds asks Step Functions before it waits;
- every ``sweep_interval`` seconds a slow sweep describes the held, unresolved transactions
  nothing has been heard of for ``sweep_after`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from notifier.lifecycle import BackgroundTasks, Service
from notifier.requests.waiters import Registry, Transaction
from notifier.sources.describe import Describer

log = logging.getLogger(__name__)

DEADLINE_PATIENCE = 2.0
"""Longest a 202 waits for its turn at the rate limit (many requests may time out at once)."""


class SafetyNet(Service):
    def __init__(
        self,
        registry: Registry,
        describer: Describer,
        *,
        sweep_interval: float,
        sweep_after: float,
        sweeping: bool = True,
    ) -> None:
        self.registry = registry
        self.describer = describer
        self.sweep_interval = sweep_interval
        self.sweep_after = sweep_after
        self.sweeping = sweeping
        """Whether the slow sweep runs (not in ``poll`` mode, where everything is polled)."""
        self.calls = 0
        self.found: Counter[str] = Counter()
        """Completions found, by the check that found them: deadline, reattach, sweep."""
        self._tasks = BackgroundTasks()

    async def start(self) -> None:
        if self.sweeping:
            self._tasks.start("safety-sweep", self._sweep_once)

    async def stop(self) -> None:
        await self._tasks.stop()

    async def at_deadline(self, txn: Transaction, held_since: float) -> None:
        """Before a 202 for ``txn``, held since ``held_since`` (monotonic): one last look."""
        if txn.completion is None and (txn.asked_at is None or txn.asked_at < held_since):
            await self._ask(txn, "deadline", DEADLINE_PATIENCE)

    async def on_reattach(self, txn: Transaction) -> None:
        """Before holding a re-attach to a known transaction: ask if nothing was heard."""
        if txn.completion is None and time.monotonic() - txn.quiet_since >= self.sweep_after:
            await self._ask(txn, "reattach")

    async def _sweep_once(self) -> None:
        await asyncio.sleep(self.sweep_interval)
        stale = [txn for txn in self.registry.stale(self.sweep_after) if not txn.poll]
        if not stale:
            return
        before = self.found["sweep"]
        await asyncio.gather(*(self._ask(txn, "sweep") for txn in stale))
        if self.found["sweep"] > before:
            log.warning(
                "safety sweep: %d of %d held requests had ended unheard of",
                self.found["sweep"] - before, len(stale),
            )  # fmt: skip

    async def _ask(self, txn: Transaction, check: str, patience: float | None = None) -> None:
        self.calls += 1
        unresolved = txn.completion is None
        await self.describer.describe(txn, patience)
        if unresolved and txn.completion is not None and txn.completion.via == "poll":
            self.found[check] += 1
