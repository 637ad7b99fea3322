"""The daemon's Prometheus metrics, in a registry of its own: the ``notifier_`` ones, and the
process's (``process_*``: CPU, memory, open file descriptors and their limit) and Python's.

Label values known in advance are set at start, so that every series exists, at 0, from the
first scrape: a rate or an alert over it never waits for the first event."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Generic, Protocol, TypeVar

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
STEP_FUNCTIONS_APIS = (
    "StartExecution",
    "DescribeExecution",
    "GetExecutionHistory",
    "ListExecutions",
    "DescribeStateMachineForExecution",
    "StopExecution",
)
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
        self.mqtt_undelivered = Counter(
            "notifier_mqtt_undelivered",
            "Completions another path brought that MQTT did not deliver while it delivered "
            "others (discarded over a quota or lost: not counted as missed)",
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
        # What every request counts, by the children of its label values.
        self._requests = Children(self.requests)
        self._completions = Children(self.completions)
        self._completion_latency = Children(self.completion_latency)
        self._aws_calls = Children(self.aws_calls)
        for source in COMPLETION_SOURCES:
            self._completions.of(source)
            self._completion_latency.of(source)
        for operation in FAST_PATH_OPERATIONS:
            self._aws_calls.of(operation)
        for api in STEP_FUNCTIONS_APIS:
            self.sfn_throttled.labels(api=api)

    def count_request(self, route: str, status: str) -> None:
        """One answered request of ``route`` (``notifier_requests``)."""
        self._requests.of(route, status).inc()

    def count_aws_call(self, operation: str) -> None:
        self._aws_calls.of(operation).inc()

    def observe_completion(
        self, source: str, stopped_at: datetime | None, notified_at: datetime
    ) -> None:
        self._completions.of(source).inc()
        if stopped_at is not None:
            delay = max(0.0, (notified_at - stopped_at).total_seconds())
            self._completion_latency.of(source).observe(delay)

    def watch_mqtt(self, pool: MqttState) -> None:
        """Report the MQTT connections' state, read at each scrape."""
        self.registry.register(_MqttCollector(pool))

    def watch_fast_calls(self, *calls: FastCallState) -> None:
        """Report whether each fast-path operation is on, and how many of its calls the AWS
        SDK made instead."""
        self.registry.register(_FastCallCollector(calls))

    def watch_step_functions(self, state: StepFunctionsState) -> None:
        """Report the reads' budget and the start pacer, read at each scrape."""
        self.registry.register(_StepFunctionsCollector(state))

    def render(self) -> bytes:
        return generate_latest(self.registry)


LabelledMetric = TypeVar("LabelledMetric", Counter, Histogram)


class Children(Generic[LabelledMetric]):
    """A labelled metric's children, each looked up once: ``labels()`` validates the values
    and takes the metric's lock at every call. As many as the metric has children."""

    def __init__(self, metric: LabelledMetric) -> None:
        self._metric: LabelledMetric = metric
        self._children: dict[tuple[str, ...], LabelledMetric] = {}

    def of(self, *values: str) -> LabelledMetric:
        """The child of ``values``, in the order of the metric's label names."""
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class MqttConnectionState(Protocol):
    @property
    def received(self) -> int: ...

    @property
    def ignored(self) -> int: ...

    @property
    def duplicated(self) -> int: ...

    @property
    def renewals(self) -> int: ...


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
        renewals = CounterMetricFamily(
            "notifier_mqtt_renewals",
            "MQTT connections distrusted (connected but not delivering) and replaced, by open "
            "connection",
            labels=["connection"],
        )
        for connection in pool.connections:
            renewals.add_metric([str(connection.index)], connection.source.renewals)
        yield renewals
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


class ReadBudgetState(Protocol):
    @property
    def rate(self) -> float: ...

    @property
    def tokens(self) -> float: ...

    @property
    def waiting(self) -> int: ...

    @property
    def spent(self) -> Mapping[str, int]: ...


class StartPacerState(Protocol):
    @property
    def rate(self) -> float: ...

    @property
    def booked(self) -> float: ...


class StepFunctionsState(Protocol):
    @property
    def budget(self) -> ReadBudgetState: ...

    @property
    def starts(self) -> StartPacerState: ...


class _StepFunctionsCollector(Collector):
    def __init__(self, state: StepFunctionsState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        budget = self._state.budget
        reads = CounterMetricFamily(
            "notifier_sfn_reads",
            "Step Functions reads made within the read budget, by API",
            labels=["api"],
        )
        for api, count in sorted(budget.spent.items()):
            reads.add_metric([api], count)
        yield reads
        yield GaugeMetricFamily(
            "notifier_sfn_read_budget_tokens",
            "Tokens (DescribeExecution calls) in this process's read budget now; negative "
            "while a dearer call is paid off",
            value=budget.tokens,
        )
        yield GaugeMetricFamily(
            "notifier_sfn_read_budget_rate",
            "Tokens a second this process's read budget is refilled with (its share of "
            "sfn_read_rate)",
            value=budget.rate,
        )
        yield GaugeMetricFamily(
            "notifier_sfn_read_budget_waiting",
            "Step Functions reads waiting for their turn in the budget",
            value=budget.waiting,
        )
        yield GaugeMetricFamily(
            "notifier_sfn_start_rate",
            "StartExecution calls a second this process makes at most (its share of "
            "sfn_start_rate)",
            value=self._state.starts.rate,
        )
        yield GaugeMetricFamily(
            "notifier_sfn_starts_booked",
            "StartExecution calls booked beyond this process's start rate, waiting for their "
            "turn",
            value=self._state.starts.booked,
        )


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
