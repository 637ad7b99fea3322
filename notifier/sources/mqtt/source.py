"""The completion source: ``<topic_root>/<instance>/<txnId>`` messages resolve held requests
in the registry."""

from __future__ import annotations

import logging

from notifier.aws import AwsSettings
from notifier.config import MqttSettings
from notifier.sources import InvalidNotificationError, parse_notification
from notifier.sources.mqtt.rotation import TokenSource
from notifier.sources.mqtt.subscription import MqttSubscription
from notifier.waiters import Registry

log = logging.getLogger(__name__)


class MqttSource(MqttSubscription):
    """Subscribed with QoS 1 to ``<topic_root>/<instance>/#``."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        instance_id: str,
        registry: Registry,
        endpoint: str,
        aws: AwsSettings | None = None,
        tokens: TokenSource | None = None,
        refresh_margin: float = 300.0,
    ) -> None:
        super().__init__(
            settings,
            client_id=instance_id,
            topic_filter=f"{settings.topic_root}/{instance_id}/#",
            endpoint=endpoint,
            aws=aws,
            tokens=tokens,
            refresh_margin=refresh_margin,
        )
        self.instance_id = instance_id
        self.registry = registry

    def handle_message(self, topic: str, payload: bytes) -> None:
        self.received += 1
        levels = topic.split("/")
        if len(levels) != 3 or levels[:2] != [self.settings.topic_root, self.instance_id]:
            self.ignored += 1
            log.warning("MQTT: ignoring a message on unexpected topic %r", topic)
            return
        about = {"txnId": levels[2]}
        try:
            completion = parse_notification(payload, via="mqtt", expected_txn_id=levels[2])
        except InvalidNotificationError as exc:
            self.ignored += 1
            log.warning("MQTT: ignoring an invalid completion on %s: %s", topic, exc, extra=about)
            return
        about["executionArn"] = completion.execution_arn or ""
        if self.registry.resolve(levels[2], completion):
            log.debug("MQTT: completion %s", completion.status, extra=about)
        elif self.registry.get(levels[2]) is None:
            self.ignored += 1
            # Expected, e.g. for executions other workflows start with our subtopic.
            log.debug("MQTT: ignoring a completion for an unknown transaction", extra=about)
        else:
            self.ignored += 1
            log.debug("MQTT: duplicate completion", extra=about)
