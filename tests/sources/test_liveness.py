"""MQTT's liveness, judged from what the other paths bring: a completion MQTT must have
carried and did not, while it claimed to be connected, is counted, reported and answered
with a fresh session; anything else is not."""

from __future__ import annotations

from datetime import datetime, timedelta

from notifier.aws.errors import AwsError
from notifier.requests.ids import new_txn_id
from notifier.requests.waiters import Completion, Registry, Status, Transaction, utcnow
from notifier.sources.liveness import MqttLiveness
from tests.support.eventually import eventually
from tests.support.executions import FakeExecutions, arn
from tests.support.sources import running_tasks, started

GRACE = 0.05
TOPIC = "notifier/unit/"


class FakeMqtt:
    def __init__(self) -> None:
        self.connected = True
        self.subscribed_at: datetime | None = utcnow() - timedelta(minutes=1)
        self.renewals = 0

    def renew(self) -> None:
        self.renewals += 1
        self.connected = False


def liveness(registry: Registry, mqtt: FakeMqtt, executions: FakeExecutions) -> MqttLiveness:
    async def published(txn: Transaction) -> bool:
        return await executions.published(txn.execution_arn, TOPIC + txn.txn_id)

    return MqttLiveness(registry, mqtt, published, grace=GRACE)


def arrived(registry: Registry, txn: Transaction, via: str) -> None:
    ended = utcnow() - timedelta(seconds=1)
    completion = Completion(
        Status.SUCCEEDED, via=via, execution_arn=arn(txn.txn_id), stop_date=ended
    )
    registry.resolve(txn.txn_id, completion)


async def test_a_completion_from_the_queue_that_mqtt_never_brings_is_a_miss() -> None:
    registry, mqtt, executions = Registry(max_held=10), FakeMqtt(), FakeExecutions()
    async with liveness(registry, mqtt, executions) as watch:
        arrived(registry, started(registry, new_txn_id()), "sqs")
        await eventually(lambda: watch.missed == 1)
        assert watch.problem is not None and "via sqs" in watch.problem
        assert mqtt.renewals == 1 and executions.history_reads == 0
        # A new connection delivers: MQTT is trusted again.
        mqtt.connected, mqtt.subscribed_at = True, utcnow()
        arrived(registry, txn := started(registry, new_txn_id()), "mqtt")
        assert watch.problem is None and txn.heard_via == {"mqtt"}


async def test_no_miss_when_mqtt_brings_it_within_the_grace() -> None:
    registry, mqtt, executions = Registry(max_held=10), FakeMqtt(), FakeExecutions()
    async with liveness(registry, mqtt, executions) as watch:
        txn = started(registry, new_txn_id())
        arrived(registry, txn, "sqs")
        arrived(registry, txn, "mqtt")  # a duplicate, but heard
        last = started(registry, new_txn_id())
        last.heard_via.add("mqtt")
        arrived(registry, last, "sqs")
        await eventually(lambda: watch.checked == 2)
        assert "mqtt-liveness" in running_tasks()
    assert watch.missed == 0 and watch.problem is None and mqtt.renewals == 0


async def test_a_sweep_counts_only_for_workflows_that_published_to_this_instance() -> None:
    registry, mqtt, executions = Registry(max_held=10), FakeMqtt(), FakeExecutions()
    async with liveness(registry, mqtt, executions) as watch:
        never_publishes = started(registry, new_txn_id())
        arrived(registry, never_publishes, "poll")
        await eventually(lambda: executions.history_reads == 1)
        assert watch.missed == 0 and watch.problem is None
        publishes = started(registry, new_txn_id())
        executions.published_to[arn(publishes.txn_id)] = TOPIC + publishes.txn_id
        arrived(registry, publishes, "poll")
        await eventually(lambda: watch.missed == 1)
        assert watch.problem is not None and "via poll" in watch.problem


async def test_no_miss_unless_connected_from_before_the_end_until_now() -> None:
    registry, mqtt, executions = Registry(max_held=10), FakeMqtt(), FakeExecutions()
    async with liveness(registry, mqtt, executions) as watch:
        mqtt.subscribed_at = utcnow()  # subscribed after the workflow ended
        arrived(registry, started(registry, new_txn_id()), "sqs")
        other = registry.track(Transaction(new_txn_id(), "hello", "x", poll=True))
        registry.resolve(other.txn_id, Completion(Status.SUCCEEDED, via="poll", execution_arn="x"))
        mqtt.connected = False  # and one while down: the sweeps' business
        arrived(registry, started(registry, new_txn_id()), "sqs")
        await eventually(lambda: watch.checked == 1)  # the others were not even candidates
        mqtt.connected = True
        arrived(registry, started(registry, new_txn_id()), "sqs")
        await eventually(lambda: watch.checked == 2)
    assert watch.missed == 0 and executions.history_reads == 0


async def test_a_failing_history_read_does_not_stop_the_watch() -> None:
    registry, mqtt, executions = Registry(max_held=10), FakeMqtt(), FakeExecutions()
    executions.history_failures.append(RuntimeError("the inner call broke"))
    async with liveness(registry, mqtt, executions) as watch:
        first, second = started(registry, new_txn_id()), started(registry, new_txn_id())
        for txn in (first, second):
            executions.published_to[arn(txn.txn_id)] = TOPIC + txn.txn_id
            arrived(registry, txn, "poll")
        await eventually(lambda: watch.missed == 1)
        assert "mqtt-liveness" in running_tasks() and executions.history_reads == 2


async def test_a_completion_missing_while_mqtt_delivers_others_is_no_dead_link() -> None:
    """IoT Core discards what goes over a connection's quotas: one completion missing while
    others arrive is counted as undelivered, and the link is left alone."""
    registry, mqtt, executions = Registry(max_held=10), FakeMqtt(), FakeExecutions()
    async with liveness(registry, mqtt, executions) as watch:
        discarded = started(registry, new_txn_id())
        arrived(registry, discarded, "sqs")  # it ended a second ago
        arrived(registry, started(registry, new_txn_id()), "mqtt")  # but MQTT delivers
        published = started(registry, new_txn_id())
        executions.published_to[arn(published.txn_id)] = TOPIC + published.txn_id
        arrived(registry, published, "poll")
        await eventually(lambda: watch.checked == 2)
    assert (watch.missed, watch.undelivered, mqtt.renewals) == (0, 2, 0)
    assert watch.problem is None and executions.history_reads == 0


async def test_a_throttled_history_read_is_no_miss() -> None:
    registry, mqtt, executions = Registry(max_held=10), FakeMqtt(), FakeExecutions()
    executions.history_failures.append(
        AwsError("GetExecutionHistory", "ThrottlingException", "Rate exceeded")
    )
    async with liveness(registry, mqtt, executions) as watch:
        txn = started(registry, new_txn_id())
        executions.published_to[arn(txn.txn_id)] = TOPIC + txn.txn_id
        arrived(registry, txn, "poll")
        await eventually(lambda: watch.checked == 1)
    assert (watch.missed, mqtt.renewals, executions.history_reads) == (0, 0, 1)
    assert watch.problem is None
