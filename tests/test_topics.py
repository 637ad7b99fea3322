"""The MQTT topics, built and read in one place."""

from __future__ import annotations

import pytest

from notifier.topics import (
    completed_execution,
    completion_topic,
    connection_filter,
    connection_subtopic,
)


def test_each_connection_of_an_instance_has_a_subtopic_under_the_instances() -> None:
    assert connection_subtopic("i-1", 0) == "i-1"
    assert connection_subtopic("i-1", 2) == "i-1/2"
    assert connection_filter("notifier", "i-1/2") == "notifier/i-1/2/+"


@pytest.mark.parametrize("subtopic", ["i-1", "i-1/2"])
def test_a_completion_topic_names_its_execution(subtopic: str) -> None:
    topic = completion_topic("notifier", subtopic, "01ABC")
    assert completed_execution(topic, "notifier", subtopic) == "01ABC"


@pytest.mark.parametrize(
    "topic",
    [
        "notifier/i-1/2/01ABC",  # a completion of the connection below
        "notifier/i-1/01ABC/extra",
        "notifier/i-1/",
        "notifier/i-1",
        "other/i-1/01ABC",
        "notifier/status/Hello/01ABC",
    ],
)
def test_any_other_topic_names_no_execution(topic: str) -> None:
    assert completed_execution(topic, "notifier", "i-1") is None
