"""The quota arithmetic on a clock the tests move: windows, buckets, the event log and the
``--quota`` option."""

from __future__ import annotations

import logging

import pytest

from notifier.local.broker_quotas import ConnectionQuotas
from notifier.local.quotas import SFN_BUCKETS, Bucket, QuotaSettings, names
from notifier.local.throttling import (
    LOG_INTERVAL,
    QuotaEvents,
    SlidingWindow,
    StepFunctionsThrottle,
    TokenBucket,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_window_never_holds_more_than_its_limit_in_any_second() -> None:
    window, admitted = SlidingWindow(100), []
    for step in range(3000):  # 300 a second offered for 10 s
        moment = step / 300
        if window.admit(moment):
            admitted.append(moment)
    assert window.peak == 100
    assert max(sum(1 for t in admitted if s <= t < s + 1) for s in admitted) == 100
    assert len(admitted) >= 1000  # and it lets the rate through, second after second


def test_a_window_counts_bytes_too() -> None:
    window = SlidingWindow(512 * 1024)
    assert window.admit(0.0, 400 * 1024)
    assert not window.admit(0.5, 200 * 1024)
    assert window.admit(1.0, 200 * 1024)  # the first left the window


def test_a_token_bucket_bursts_to_its_size_then_refills_at_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(Bucket(300, 15), clock)
    assert sum(bucket.take() for _ in range(700)) == 300
    clock.now += 2
    assert sum(bucket.take() for _ in range(100)) == 30


def test_step_functions_throttling_counts_only_throttled_operations() -> None:
    events = QuotaEvents()
    throttle = StepFunctionsThrottle(SFN_BUCKETS, events, Clock())
    assert sum(throttle.admit("DescribeExecution") for _ in range(700)) == 300
    assert all(throttle.admit("DescribeStateMachine") for _ in range(700))  # not modelled
    assert events.counts()["sfn_throttled"] == 400


def test_one_connect_a_second_per_client_id() -> None:
    clock = Clock()
    quotas = ConnectionQuotas(QuotaSettings(), QuotaEvents(), clock)
    assert quotas.connect("a") and quotas.connect("b")
    clock.now += 0.5
    assert not quotas.connect("a")
    clock.now += 0.6
    assert quotas.connect("a")
    assert quotas.events.counts()["iot_connects_refused"] == 1


def test_with_quotas_off_connections_are_only_measured() -> None:
    quotas = ConnectionQuotas(QuotaSettings(enabled=False), QuotaEvents(), Clock())
    assert all(quotas.deliver("a", 100_000) for _ in range(1000))
    assert quotas.payload_allowed("a", 10**6) and quotas.subscriptions_allowed("a", 500)
    assert quotas.peak_messages_per_second == 1000 and quotas.peak_client_id == "a"
    assert not any(quotas.events.counts().values())


def test_quota_events_are_logged_at_a_bounded_rate(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    events = QuotaEvents(clock)
    with caplog.at_level(logging.WARNING, "notifier.local.quotas"):
        for _ in range(500):
            events.record("iot_discarded", "a delivery discarded")
        clock.now += LOG_INTERVAL
        events.record("iot_discarded", "a delivery discarded")
    assert events.counts()["iot_discarded"] == 501
    assert [r.getMessage() for r in caplog.records] == [
        "AWS quota: a delivery discarded",
        "AWS quota: a delivery discarded (and 499 more since the last report)",
    ]


def test_each_quota_can_be_set_by_name() -> None:
    settings = QuotaSettings().with_values(
        ["iot-publish-rate=80", "iot-payload=1000", "sfn-describe-execution=10/2"]
    )
    assert settings.iot_publish_rate == 80 and settings.iot_payload == 1000
    assert settings.sfn["DescribeExecution"] == Bucket(10, 2)
    assert QuotaSettings.from_json(settings.to_json()) == settings
    assert "sfn-send-task-heartbeat" in names() and "iot-subscriptions" in names()
    for wrong in ("iot-payload", "nosuch=1", "iot-payload=-1", "sfn-start-execution=5"):
        with pytest.raises(ValueError, match="--quota"):
            QuotaSettings().with_values([wrong])
