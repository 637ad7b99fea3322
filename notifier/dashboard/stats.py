"""The daemon's own numbers for the dashboard's charts, read from its metrics.

Counters only: the page takes two readings apart to get completions per second by path and
the added latency's percentiles over the time between them, as a Prometheus query would.
"""

from __future__ import annotations

from typing import Any

from notifier.metrics import NOTIFICATION_BUCKETS, Metrics


def snapshot(metrics: Metrics, max_held: int) -> dict[str, Any]:
    """``{held, maxHeld, completions: {source: n}, latencyBuckets: [le...],
    latency: {source: [cumulative count per bucket]}}``."""
    completions: dict[str, float] = {}
    latency: dict[str, list[float]] = {}
    held = 0.0
    bounds = [float(b) for b in NOTIFICATION_BUCKETS]
    for family in metrics.registry.collect():
        for sample in family.samples:
            source = sample.labels.get("source", "")
            if sample.name == "notifier_held_requests":
                held = sample.value
            elif sample.name == "notifier_completions_total":
                completions[source] = sample.value
            elif sample.name == "notifier_completion_latency_seconds_bucket":
                le = float(sample.labels["le"])
                if le in bounds:
                    counts = latency.setdefault(source, [0.0] * len(bounds))
                    counts[bounds.index(le)] = sample.value
    return {
        "held": held,
        "maxHeld": max_held,
        "completions": completions,
        "latencyBuckets": bounds,
        "latency": latency,
    }
