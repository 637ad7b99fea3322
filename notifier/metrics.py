"""The daemon's Prometheus metrics, in a registry of its own: the ``notifier_`` ones, and the
process's (``process_*``: CPU, memory, open file descriptors and their limit) and Python's.

Label values known in advance are set at start, so that every series exists, at 0, from the
first scrape: a rate or an alert over it never waits for the first event."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from notifier import __version__

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds from a workflow's end to the daemon learning of it: MQTT is milliseconds,
# polling and queues are seconds.
NOTIFICATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

COMPLETION_SOURCES = ("mqtt", "sqs", "poll", "stop")
"""What can tell the daemon of a completion (``Completion.via``)."""
FAST_PATH_OPERATIONS = ("PutObject", "StartExecution")
STEP_FUNCTIONS_APIS = ("StartExecution", "DescribeExecution", "StopExecution")
"""The Step Functions calls the daemon makes, each with a quota of its own."""


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # What prometheus_client's default registry has: read from /proc and the interpreter
        # at each scrape.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        Info("notifier_build", "The running notifier's version", registry=r).info(
            {"version": __version__}
        )
        self.held_requests = Gauge(
            "notifier_held_requests", "HTTP requests held open right now", registry=r
        )
        self.held_reattached_requests = Gauge(
            "notifier_held_reattached_requests",
            "Of the requests held, those re-attached to a transaction",
            registry=r,
        )
        self.held_requests_limit = Gauge(
            "notifier_held_requests_limit",
            "Most requests held at once, by kind: that started a transaction (start, "
            "[http] max_held) or re-attached to one (reattach, max_reattach_held); beyond, 503",
            ["kind"],
            registry=r,
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
        self.dead_letter_messages = Gauge(
            "notifier_dead_letter_messages",
            "Messages in a dead-letter queue of the stack, by queue (approximate, as SQS "
            "counts them, read every minute)",
            ["queue"],
            registry=r,
        )
        self.sfn_throttled = Counter(
            "notifier_sfn_throttled",
            "Step Functions calls refused for the account's rate (ThrottlingException), by API",
            ["api"],
            registry=r,
        )
        for source in COMPLETION_SOURCES:
            self.completions.labels(source=source)
            self.completion_latency.labels(source=source)
        for operation in FAST_PATH_OPERATIONS:
            self.aws_calls.labels(operation=operation)
        for api in STEP_FUNCTIONS_APIS:
            self.sfn_throttled.labels(api=api)

    def observe_completion(
        self, source: str, stopped_at: datetime | None, notified_at: datetime
    ) -> None:
        self.completions.labels(source=source).inc()
        if stopped_at is not None:
            delay = max(0.0, (notified_at - stopped_at).total_seconds())
            self.completion_latency.labels(source=source).observe(delay)

    def watch_mqtt(self, *connections: MqttState) -> None:
        """Report the state of each MQTT connection (labelled by its place, ``connection``
        0, 1, ...), read at each scrape."""
        self.registry.register(_MqttCollector(connections))

    def watch_fast_calls(self, *calls: FastCallState) -> None:
        """Report whether each fast-path operation is on, and how many of its calls the AWS
        SDK made instead."""
        self.registry.register(_FastCallCollector(calls))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MqttState(Protocol):
    connected: bool
    reconnects: int
    refreshes: int
    renewals: int
    received: int
    ignored: int
    duplicated: int


# name, help, and what each connection's value is
_MQTT_COUNTERS: tuple[tuple[str, str, Callable[[MqttState], int]], ...] = (
    ("notifier_mqtt_reconnects", "MQTT connections resumed after a loss", lambda c: c.reconnects),
    (
        "notifier_token_refreshes",
        "IoT tokens fetched after the first (a new connection each)",
        lambda c: c.refreshes,
    ),
    (
        "notifier_mqtt_renewals",
        "MQTT connections distrusted (not delivering while claiming to be up) and replaced",
        lambda c: c.renewals,
    ),
    ("notifier_mqtt_messages_received", "MQTT messages received", lambda c: c.received),
    (
        "notifier_mqtt_messages_ignored",
        "MQTT messages received that answered nothing: not a completion, on another topic, "
        "or for a transaction not held here",
        lambda c: c.ignored,
    ),
    (
        "notifier_mqtt_messages_duplicated",
        "MQTT completions received for a transaction already answered",
        lambda c: c.duplicated,
    ),
)


class _MqttCollector(Collector):
    def __init__(self, connections: tuple[MqttState, ...]) -> None:
        self._connections = connections

    def collect(self) -> Iterator[Metric]:
        connected = GaugeMetricFamily(
            "notifier_mqtt_connected",
            "1 while the MQTT connection is up (connected and subscribed)",
            labels=["connection"],
        )
        for index, connection in enumerate(self._connections):
            connected.add_metric([str(index)], 1 if connection.connected else 0)
        yield connected
        for name, description, value in _MQTT_COUNTERS:
            family = CounterMetricFamily(name, description, labels=["connection"])
            for index, connection in enumerate(self._connections):
                family.add_metric([str(index)], value(connection))
            yield family


class FastCallState(Protocol):
    @property
    def operation(self) -> str: ...

    @property
    def enabled(self) -> bool: ...

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
        enabled = GaugeMetricFamily(
            "notifier_aws_fast_path_enabled",
            "1 while the fast path makes the operation's calls; 0 once it has turned itself "
            "off (the AWS SDK makes every call)",
            labels=["operation"],
        )
        for call in self._calls:
            family.add_metric([call.operation], call.handed_over)
            enabled.add_metric([call.operation], 1 if call.enabled else 0)
        yield family
        yield enabled

