"""The daemon's Prometheus metrics, all ``notifier_``-prefixed, in a registry of its own."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds from a workflow's end to the daemon learning of it: MQTT is milliseconds,
# polling and queues are seconds.
NOTIFICATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.held_requests = Gauge(
            "notifier_held_requests", "HTTP requests held open right now", registry=r
        )
        self.requests = Counter(
            "notifier_requests",
            "Answered requests by route and outcome (final status, RUNNING for 202, or error)",
            ["route", "status"],
            registry=r,
        )
        self.completions = Counter(
            "notifier_completions",
            "Completions that answered a transaction, by the source that delivered them",
            ["source"],
            registry=r,
        )
        self.completion_latency = Histogram(
            "notifier_completion_latency_seconds",
            "Seconds from a workflow's end to the daemon learning of it, by source",
            ["source"],
            buckets=NOTIFICATION_BUCKETS,
            registry=r,
        )
        self.aws_calls = Counter(
            "notifier_aws_api_calls", "AWS API calls made, by operation", ["operation"], registry=r
        )
        self.completions_rejected = Counter(
            "notifier_completions_rejected",
            "Completions ignored because they are not about the execution started for the "
            "transaction, by reason",
            ["reason"],
            registry=r,
        )
        self.mqtt_missed = Counter(
            "notifier_mqtt_missed",
            "Completions another path brought that MQTT, connected, did not deliver in time",
            registry=r,
        )

    def observe_completion(
        self, source: str, stopped_at: datetime | None, notified_at: datetime
    ) -> None:
        self.completions.labels(source=source).inc()
        if stopped_at is not None:
            delay = max(0.0, (notified_at - stopped_at).total_seconds())
            self.completion_latency.labels(source=source).observe(delay)

    def watch_mqtt(self, pool: MqttState) -> None:
        """Report the MQTT connections' state, read at each scrape."""
        self.registry.register(_MqttCollector(pool))

    def watch_fast_calls(self, *calls: FastCallState) -> None:
        """Report how many calls of each fast-path operation the AWS SDK made instead."""
        self.registry.register(_FastCallCollector(calls))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MqttConnectionState(Protocol):
    @property
    def received(self) -> int: ...

    @property
    def ignored(self) -> int: ...

    @property
    def duplicated(self) -> int: ...


class MqttPoolConnection(Protocol):
    @property
    def index(self) -> int: ...

    @property
    def source(self) -> MqttConnectionState: ...


class MqttState(Protocol):
    @property
    def connected(self) -> bool: ...

    @property
    def reconnects(self) -> int: ...

    @property
    def refreshes(self) -> int: ...

    @property
    def connections(self) -> Sequence[MqttPoolConnection]: ...

    @property
    def max_connections(self) -> int: ...

    def peak_per_second(self) -> dict[int, int]: ...


class _MqttCollector(Collector):
    def __init__(self, source: MqttState) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        pool = self._source
        yield GaugeMetricFamily(
            "notifier_mqtt_connected",
            "1 while every MQTT connection in service is up",
            value=1 if pool.connected else 0,
        )
        yield GaugeMetricFamily(
            "notifier_mqtt_connections",
            "MQTT connections open for completions (or opening)",
            value=len(pool.connections),
        )
        yield GaugeMetricFamily(
            "notifier_mqtt_connections_max",
            "MQTT connections the configured peak completion rate may open",
            value=pool.max_connections,
        )
        messages = CounterMetricFamily(
            "notifier_mqtt_messages",
            "Messages received on each open MQTT connection, by outcome: received (all), "
            "ignored (not a completion of a held transaction), duplicated (of one resolved)",
            labels=["connection", "outcome"],
        )
        for connection in pool.connections:
            index, source = str(connection.index), connection.source
            messages.add_metric([index, "received"], source.received)
            messages.add_metric([index, "ignored"], source.ignored)
            messages.add_metric([index, "duplicated"], source.duplicated)
        yield messages
        peaks = GaugeMetricFamily(
            "notifier_mqtt_connection_peak_messages_per_second",
            "The most messages each MQTT connection received within one second",
            labels=["connection"],
        )
        for number, peak in sorted(pool.peak_per_second().items()):
            peaks.add_metric([str(number)], peak)
        yield peaks
        yield CounterMetricFamily(
            "notifier_mqtt_reconnects",
            "MQTT connections resumed after a loss",
            value=self._source.reconnects,
        )
        yield CounterMetricFamily(
            "notifier_token_refreshes",
            "IoT tokens fetched after the first (a new connection each)",
            value=self._source.refreshes,
        )


class FastCallState(Protocol):
    @property
    def operation(self) -> str: ...

    @property
    def handed_over(self) -> int: ...


class _FastCallCollector(Collector):
    def __init__(self, calls: tuple[FastCallState, ...]) -> None:
        self._calls = calls

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "notifier_aws_fast_path_handovers",
            "Calls of a fast-path operation made by the AWS SDK instead: after an error "
            "answer or a failed connection (and for a while after one), or with a parameter "
            "the fast path does not serialize",
            labels=["operation"],
        )
        for call in self._calls:
            family.add_metric([call.operation], call.handed_over)
        yield family
