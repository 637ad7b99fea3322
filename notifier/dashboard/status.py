"""The stack's status topics, ``<topic_root>/status/<stateMachine>/<execution>``.

The stack's status forwarder publishes there the status changes (RUNNING and the final
status) of one workflow execution in the stack's ``StatusFeedOneIn``, whoever started it:
a sample that keeps this one connection within IoT Core's 100 deliveries a second at the
account's execution rate (docs/completion-messages.md states the bound). The daemon reads
them with a read-only dashboard token (or its own credentials with the transports that use
no tokens) and hands each one to its handlers; a message that is not a status change is
logged and skipped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from notifier.config import AwsSettings, MqttSettings
from notifier.sources.mqtt import MqttSubscription, TokenSource
from notifier.topics import status_filter

log = logging.getLogger(__name__)

StatusHandler = Callable[[dict[str, Any]], None]
"""Gets a status message; raises ValueError if it is not a valid one."""


class StatusFeed(MqttSubscription):
    def __init__(
        self,
        settings: MqttSettings,
        *,
        instance_id: str,
        handlers: Sequence[StatusHandler],
        endpoint: str,
        aws: AwsSettings | None = None,
        tokens: TokenSource | None = None,
        refresh_margin: float = 300.0,
    ) -> None:
        super().__init__(
            settings,
            client_id=f"{instance_id}-status",
            topic_filter=status_filter(settings.topic_root),
            endpoint=endpoint,
            label="MQTT status feed",
            aws=aws,
            tokens=tokens,
            refresh_margin=refresh_margin,
        )
        self.handlers = tuple(handlers)

    def handle_message(self, topic: str, payload: bytes) -> None:
        self.received += 1
        try:
            message = json.loads(payload)
            if not isinstance(message, dict):
                raise ValueError("not a JSON object")
            for handler in self.handlers:
                handler(message)
        except (UnicodeDecodeError, ValueError) as exc:
            self.ignored += 1
            log.warning("status feed: ignoring a message on %s: %s", topic, exc)
