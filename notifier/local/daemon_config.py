"""The daemon's configuration against a running local stack.

The stack gives it the way any deployment would: the shipped ``local.toml`` and
``NOTIFIER_<SECTION>_<KEY>`` overrides naming where the stack's parts listen, read by the
daemon's own :func:`~notifier.config_loader.load_settings`. Nothing in the daemon knows of the
local stack.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from notifier.config import TOKEN_TRANSPORTS, ConfigError, Settings
from notifier.config_loader import load_settings
from notifier.local.settings import LOCAL_CONFIG

if TYPE_CHECKING:
    from notifier.local.stack import LocalStack


def local_settings(
    stack: LocalStack, path: Path | None = None, env: Mapping[str, str] = os.environ
) -> Settings:
    """Settings for the daemon against ``stack``.

    Read from ``path`` (default ``notifier/local/local.toml``) with the overrides of ``env``;
    where the stack's MQTT broker (the port of the configured transport), its CA, AWS
    endpoint, token issuer (for the transports that use tokens), bucket, completion and
    approval queues are, are taken from the stack itself (:func:`stack_overrides`).
    """
    path = path or LOCAL_CONFIG
    configured = load_settings(path, env)
    return load_settings(path, {**env, **stack_overrides(stack, configured)})


def stack_overrides(stack: LocalStack, configured: Settings) -> dict[str, str]:
    """The ``NOTIFIER_*`` variables that point a daemon configured as ``configured`` at
    ``stack``."""
    served = {
        "custom-auth": stack.broker.tls_port,
        "custom-auth-websockets": stack.broker.wss_port,
        "tcp": stack.broker.port,
        "mtls": stack.broker.tls_port,
    }
    transport = configured.mqtt.transport
    if configured.daemon.completion == "mqtt" and transport not in served:
        raise ConfigError(
            f"[mqtt] transport: the local stack serves {', '.join(served)}, not {transport!r}"
        )
    aws = stack.aws_settings
    outputs = stack.outputs
    values = {
        "AWS_REGION": aws.region,
        "AWS_ENDPOINT_URL": aws.endpoint_url,
        "AWS_PROFILE": aws.profile,
        "AWS_ACCESS_KEY_ID": aws.access_key_id,
        "AWS_SECRET_ACCESS_KEY": aws.secret_access_key,
        "MQTT_ENDPOINT": stack.settings.host,
        "MQTT_PORT": served.get(transport, stack.broker.port),
        "MQTT_TOPIC_ROOT": stack.settings.topic_root,
        "MQTT_CA_FILE": stack.ca_file,
        "IOTAUTH_ISSUER_URL": stack.issuer_url if transport in TOKEN_TRANSPORTS else None,
        "SQS_QUEUE_PREFIX": outputs["CompletionQueuePrefix"],
        "SQS_DEAD_LETTER_QUEUE_ARN": outputs["StatusDeadLetterQueueArn"],
        "S3_BUCKET": outputs["ProcessDataBucketName"],
        "DASHBOARD_APPROVAL_QUEUE_URL": outputs["ApprovalQueueUrl"],
        "DASHBOARD_APPROVAL_TABLE": outputs["ApprovalTableName"],
        "DASHBOARD_APPROVAL_TOPIC_ARN": outputs["ApprovalTopicArn"],
    }
    # An empty override is an unset value.
    return {f"NOTIFIER_{key}": "" if value is None else str(value) for key, value in values.items()}
