"""What AWS's quotas did during a measured run: the local stack's quota events (and the
stand-in's) and the busiest MQTT connection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the local extra, imported once a run starts
    from notifier.local.sfn_standin import StepFunctionsStandIn
    from notifier.local.stack import LocalStack


@dataclass(frozen=True)
class QuotaReport:
    events: dict[str, int]
    """Quota events by kind during the run, each kind present (0 when none)."""
    busiest_connection_per_s: int
    """The most messages one MQTT connection published or was delivered within a second."""
    busiest_client_id: str | None


class QuotaWatch:
    """Between :meth:`begin` and :meth:`end`: the quota events of ``stack`` and ``standin``."""

    def __init__(self, stack: LocalStack, standin: StepFunctionsStandIn | None = None) -> None:
        self._stack = stack
        self._standin = standin
        self._before: dict[str, int] = {}

    async def _counts(self) -> dict[str, int]:
        counts = await self._stack.quota_events()
        if self._standin is not None:
            for kind, n in self._standin.quota_events.counts().items():
                counts[kind] = counts.get(kind, 0) + n
        return counts

    async def begin(self) -> None:
        self._before = await self._counts()
        self._stack.connection_quotas.reset_peak()

    async def end(self) -> QuotaReport:
        after = await self._counts()
        connections = self._stack.connection_quotas
        return QuotaReport(
            events={kind: n - self._before.get(kind, 0) for kind, n in after.items()},
            busiest_connection_per_s=connections.peak_messages_per_second,
            busiest_client_id=connections.peak_client_id,
        )
