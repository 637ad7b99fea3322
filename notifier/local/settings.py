"""Where the local stack listens and what it deploys, and the daemon's configuration for it.

Needs nothing of the local extra, so that the command line can show its options without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from notifier.local.quotas import QuotaSettings

LOCAL_CONFIG = Path(__file__).resolve().parent / "local.toml"
"""The daemon's configuration against the local stack, shipped in the package."""
LOCAL_CREDENTIAL = "local"
"""The access key id and secret of every local client: the AWS endpoint and the token API
answer only requests signed with these (SigV4)."""
PUBLISHER_CLIENT_ID = "notifier-local-iot-data"
"""The client id and user name of the AWS endpoint's one broker connection, which publishes
what the IoT data plane's Publish API is given (the broker lets it publish anywhere)."""
LOCAL_WORK_ROOT = Path(__file__).resolve().parents[2] / "build" / "local"
"""Where ``notifier local`` keeps each stack's files (``<root>/<stack name>``): its CA and
the broker's certificate, which local.toml's [mqtt] ca_file names."""


@dataclass
class LocalStackSettings:
    host: str = "127.0.0.1"
    aws_port: int = 4566
    mqtt_port: int = 1883
    """Plain MQTT (``tcp`` transport)."""
    mqtt_tls_port: int = 8883
    """MQTT over TLS with ALPN ``mqtt`` (``custom-auth``; IoT Core's port 443)."""
    mqtt_wss_port: int = 8443
    """MQTT over WebSockets over TLS (``custom-auth-websockets``; IoT Core's port 443)."""
    issuer_port: int = 4567
    work_dir: Path | None = None
    """The stack's own files (its CA and certificates); unset: a temporary directory,
    removed when the stack stops."""
    stack_name: str = "notifier-local"
    stage: str = "local"
    topic_root: str = "notifier"
    log_level: str = "WARNING"
    parameters: dict[str, str] = field(default_factory=dict)
    quotas: QuotaSettings = field(default_factory=QuotaSettings)
    """AWS's quotas, enforced as AWS does (IoT Core's per connection, Step Functions' API
    throttling); ``QuotaSettings(enabled=False)``: none."""
