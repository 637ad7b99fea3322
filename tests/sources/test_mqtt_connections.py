"""The connection factory's spacing of CONNECTs: AWS IoT Core accepts one per second per
client id."""

from __future__ import annotations

from notifier.sources.mqtt.connections import ConnectSpacing


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


async def test_a_client_id_connects_at_most_once_a_second() -> None:
    clock = Clock()
    spacing = ConnectSpacing(interval=1.0, clock=clock)
    assert spacing.delay("a") == 0
    await spacing.turn("a")
    assert spacing.delay("a") == 1.0 and spacing.delay("b") == 0  # each client id its own
    clock.now += 0.25
    assert spacing.delay("a") == 0.75
    clock.now += 0.75
    assert spacing.delay("a") == 0
    await spacing.turn("a")
    assert spacing.delay("a") == 1.0
