"""What the application keeps: its settings in force, readiness, and the parts that serve."""

from __future__ import annotations

import math
from dataclasses import dataclass

from aiohttp import web

from notifier.apikeys import ApiKey, ApiKeys
from notifier.aws.clients import AwsClients
from notifier.config import AwsSettings, Settings
from notifier.metrics import Metrics
from notifier.requests.executions import Executions
from notifier.requests.waiters import Registry
from notifier.sources.describe import DescribePoller
from notifier.sources.liveness import MqttLiveness
from notifier.sources.mqtt import MqttSource
from notifier.sources.mqtt.pool import MqttPool
from notifier.sources.pointers import OutputFetcher
from notifier.sources.queue import SqsSource
from notifier.sources.safety_net_while_up import SafetyNet
from notifier.sources.sweeps_while_down import Reconciler
from notifier.sources.sync import SyncRuns
from notifier.tracing import Tracing


@dataclass
class LiveSettings:
    """The settings in force; replaced as a whole when the configuration is reloaded.

    The one place the routes, limits and API keys in force are read from.
    """

    current: Settings


@dataclass
class AwsReachability:
    """The last answer of the readiness check against AWS, reused for a while."""

    error: str | None = None
    checked_at: float = -math.inf


@dataclass
class Admission:
    """Whether new requests are taken; cleared when the daemon starts draining."""

    accepting: bool = True


SETTINGS = web.AppKey("settings", LiveSettings)
AWS_SETTINGS = web.AppKey("aws_settings", AwsSettings)
AWS_CLIENTS = web.AppKey("aws_clients", AwsClients)
"""Every AWS client of the application comes from these: one SDK session, which reads each
service's model once, and every call counted in the metrics."""
INSTANCE_ID = web.AppKey("instance_id", str)
REGISTRY = web.AppKey("registry", Registry)
ADMISSION = web.AppKey("admission", Admission)
EXECUTIONS = web.AppKey("executions", Executions)
MQTT = web.AppKey("mqtt", MqttSource)
"""The first connection of the pool; absent in ``poll`` completion mode."""
MQTT_POOL = web.AppKey("mqtt_pool", MqttPool)
"""Absent in ``poll`` completion mode."""
SQS = web.AppKey("sqs", SqsSource)
"""Absent without ``[sqs] queue_prefix``."""
POLLER = web.AppKey("poller", DescribePoller)
RECONCILER = web.AppKey("reconciler", Reconciler)
SAFETY_NET = web.AppKey("safety_net", SafetyNet)
SYNC_RUNS = web.AppKey("sync_runs", SyncRuns)
OUTPUT_FETCHER = web.AppKey("output_fetcher", OutputFetcher)
LIVENESS = web.AppKey("mqtt_liveness", MqttLiveness)
"""Absent in ``poll`` completion mode."""
METRICS = web.AppKey("metrics", Metrics)
TRACING = web.AppKey("tracing", Tracing)
API_KEYS = web.AppKey("api_keys", ApiKeys)
AWS_REACHABILITY = web.AppKey("aws_reachability", AwsReachability)

API_KEY_NAME = web.RequestKey("api_key_name", str)
"""The name of the API key a request was let in with; absent when keys are not required."""
API_KEY = web.RequestKey("api_key", ApiKey)
"""The API key a request was let in with; absent when keys are not required."""
AUTHORIZED = web.RequestKey("authorized", bool)
"""Whether a request may see what takes an API key: keys are not required, or it carries a
valid one within its rate. Set for every route but the open ones."""


def api_keys_from(settings: Settings) -> ApiKeys:
    return ApiKeys(
        {
            name: ApiKey(name, key.sha256, key.rate, key.burst, key.max_held, frozenset(key.roles))
            for name, key in settings.api_keys.items()
        }
    )
