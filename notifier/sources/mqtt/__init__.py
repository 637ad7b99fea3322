"""The primary completion source: awscrt MQTT 3.1.1 connections, subscribed with QoS 1.

- :mod:`~notifier.sources.mqtt.connections`: the connection factory (transports, CONNECT,
  SUBACK, close, each bounded in time);
- :mod:`~notifier.sources.mqtt.bridge`: from awscrt's threads to the event loop;
- :mod:`~notifier.sources.mqtt.rotation`: fresh tokens before they expire, and the
  retirement of the connection a new one replaces;
- :mod:`~notifier.sources.mqtt.subscription`: one connection kept subscribed to one topic
  filter (the dashboard's status feed is one too);
- :mod:`~notifier.sources.mqtt.source`: the completions it receives resolve held requests;
- :mod:`~notifier.sources.mqtt.pool`: as many such connections as the completion rate
  needs, each within AWS IoT Core's limit per connection, each on its own subtopic.

With a token source (the ``custom-auth*`` transports and ``tcp``) a connection authenticates
with an iotauth token, the way AWS IoT's custom authorizers expect it.
"""

from notifier.sources.mqtt.connections import (
    DEFAULT_PORTS,
    RESPONSE_TIMEOUT_MS,
    MqttAuthError,
    MqttConnectError,
    response_timeout_ms,
)
from notifier.sources.mqtt.rotation import TokenSource
from notifier.sources.mqtt.source import MqttSource
from notifier.sources.mqtt.subscription import MqttSubscription

__all__ = [
    "DEFAULT_PORTS",
    "RESPONSE_TIMEOUT_MS",
    "MqttAuthError",
    "MqttConnectError",
    "MqttSource",
    "MqttSubscription",
    "TokenSource",
    "response_timeout_ms",
]
