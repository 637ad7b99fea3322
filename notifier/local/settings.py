"""Where the local stack listens and what it deploys, and the daemon's configuration for it.

Needs nothing of the local extra, so that the command line can show its options without it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

LOCAL_CONFIG = Path(__file__).resolve().parent / "local.toml"
DUMMY_CREDENTIAL = "local"
"""The access key id and secret of every local client: the local endpoint accepts any
credentials, these only let the SDKs sign."""
"""The daemon's configuration against the local stack, shipped in the package."""


@dataclass
class LocalStackSettings:
    host: str = "127.0.0.1"
    aws_port: int = 4566
    mqtt_port: int = 1883
    issuer_port: int = 4567
    issuer_api_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    """The key the local token issuer wants in ``x-api-key``; random unless given."""
    stack_name: str = "notifier-local"
    stage: str = "local"
    topic_root: str = "notifier"
    log_level: str = "WARNING"
    parameters: dict[str, str] = field(default_factory=dict)
