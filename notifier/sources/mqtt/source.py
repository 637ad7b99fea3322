"""One connection's completions: ``<topic_root>/<subtopic>/<txnId>`` messages resolve held
requests in the registry."""

from __future__ import annotations

import logging
import time

from notifier.config import AwsSettings, MqttSettings
from notifier.requests.waiters import Registry
from notifier.sources import InvalidNotificationError, parse_notification
from notifier.sources.mqtt.connections import ConnectSpacing
from notifier.sources.mqtt.rotation import TokenSource
from notifier.sources.mqtt.subscription import MqttSubscription
from notifier.topics import completed_execution, connection_filter

log = logging.getLogger(__name__)


class MqttSource(MqttSubscription):
    """Subscribed with QoS 1 to ``<topic_root>/<subtopic>/+`` (``subtopic`` and the client
    id default to the instance id)."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        instance_id: str,
        registry: Registry,
        endpoint: str,
        subtopic: str | None = None,
        client_id: str | None = None,
        aws: AwsSettings | None = None,
        tokens: TokenSource | None = None,
        refresh_margin: float = 300.0,
        connects: ConnectSpacing | None = None,
    ) -> None:
        self.subtopic = subtopic or instance_id
        super().__init__(
            settings,
            client_id=client_id or instance_id,
            topic_filter=connection_filter(settings.topic_root, self.subtopic),
            endpoint=endpoint,
            label="MQTT" if self.subtopic == instance_id else f"MQTT {self.subtopic}",
            aws=aws,
            tokens=tokens,
            refresh_margin=refresh_margin,
            connects=connects,
        )
        self.instance_id = instance_id
        self.registry = registry
        self.duplicated = 0
        """Completions of transactions already resolved (counted in ``ignored`` too)."""
        self.peak_per_second = 0
        """The most messages received within one second (of the monotonic clock)."""
        self._second = 0
        self._in_second = 0

    def handle_message(self, topic: str, payload: bytes) -> None:
        self.received += 1
        self._count_rate()
        txn_id = completed_execution(topic, self.settings.topic_root, self.subtopic)
        if txn_id is None:
            self.ignored += 1
            log.warning("%s: ignoring a message on unexpected topic %r", self.label, topic)
            return
        about = {"txnId": txn_id}
        try:
            completion = parse_notification(payload, via="mqtt", expected_txn_id=txn_id)
        except InvalidNotificationError as exc:
            self.ignored += 1
            log.warning(
                "%s: ignoring an invalid completion on %s: %s", self.label, topic, exc,
                extra=about,
            )  # fmt: skip
            return
        about["executionArn"] = completion.execution_arn or ""
        if self.registry.resolve(txn_id, completion):
            log.debug("%s: completion %s", self.label, completion.status, extra=about)
        elif self.registry.get(txn_id) is None:
            self.ignored += 1
            # Expected, e.g. for executions other workflows start with our subtopic.
            log.debug("%s: ignoring a completion for an unknown transaction", self.label,
                      extra=about)  # fmt: skip
        else:
            self.ignored += 1
            self.duplicated += 1
            log.debug("%s: duplicate completion", self.label, extra=about)

    def _count_rate(self) -> None:
        second = int(time.monotonic())
        if second != self._second:
            self._second, self._in_second = second, 0
        self._in_second += 1
        self.peak_per_second = max(self.peak_per_second, self._in_second)
