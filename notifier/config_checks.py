"""What a configuration must hold to be used, each problem a line naming its section and key:
values in range and settings that go together; and configurations refused as unsafe, API
keys off, plain MQTT or a plain-HTTP token issuer anywhere but loopback, a secret written in
the configuration file, API keys whose roles, budgets or owner tags would not hold."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from notifier.apikeys import ROLES, owner_tag
from notifier.config import (
    NAME,
    RESERVED_PATHS,
    ROUTE_NAME,
    SHA256_HEX,
    STATE_MACHINE_ARN,
    TOKEN_TRANSPORTS,
    ConfigError,
    DashboardSettings,
    HttpSettings,
    RouteSettings,
    Settings,
    route_limits,
)
from notifier.loopback import is_loopback
from notifier.tracing import OTEL_EXTRA, otel_missing

SECRETS = {
    ("aws", "secret_access_key"): "AWS_SECRET_ACCESS_KEY",
    ("dashboard", "approval_link_secret"): "NOTIFIER_DASHBOARD_APPROVAL_LINK_SECRET",
}
"""Settings that are secrets, with the environment variable to set instead: not in the file,
which is installed world-readable, but in the unit's ``EnvironmentFile=`` or a
``LoadCredential=`` file (see config/notifier.service)."""
PUBLISHED_LOCALLY = {("aws", "secret_access_key")}
"""Secrets the local stack publishes: allowed in the file with a loopback AWS endpoint."""


def secrets_in_file(raw: Mapping[str, Any], settings: Settings) -> list[str]:
    """A secret written in the file, but for the local stack's published credentials with
    a loopback AWS endpoint."""
    local = url_is_loopback(settings.aws.endpoint_url)
    return [
        f"[{section}] {key}: a secret does not belong in the configuration file; set "
        f"{variable} in the environment file or use a LoadCredential= file (see "
        "config/notifier.service)"
        for (section, key), variable in SECRETS.items()
        if key in raw.get(section, {}) and not (local and (section, key) in PUBLISHED_LOCALLY)
    ]


def exposed(settings: Settings, uses_mqtt: bool) -> list[str]:
    """What would let anyone off the machine in or listen: keys off, a plain-HTTP token
    issuer or plain MQTT, on anything but loopback."""
    problems = []
    http, issuer = settings.http, settings.iotauth.issuer_url
    if not http.require_api_key and not is_loopback(http.host):
        problems.append(
            f"[http] require_api_key: false is for a loopback host only, not {http.host!r}: "
            "anyone who reaches the port could start and read every workflow"
        )
    if issuer and issuer.startswith("http://") and not url_is_loopback(issuer):
        problems.append(
            "[iotauth] issuer_url: plain http:// is for a loopback issuer only; use https://"
        )
    mqtt = settings.mqtt
    if uses_mqtt and mqtt.transport == "tcp" and mqtt.endpoint and not is_loopback(mqtt.endpoint):
        problems.append("[mqtt] transport: 'tcp' (plain MQTT) is for a loopback broker only")
    return problems


def api_key_problems(settings: Settings) -> list[str]:
    """Budgets below one; a role that is neither the daemon's own (:data:`ROLES`) nor named
    by a route's ``start_roles`` (a misspelling); two keys whose executions could not be told
    apart (the same owner tag)."""
    problems = []
    known = set(ROLES).union(*(r.start_roles or () for r in settings.routes.values()))
    tags: dict[str, str] = {}
    for name, key in settings.api_keys.items():
        if key.max_held < 1:
            problems.append(f"[api_keys.{name}] max_held: must be at least 1")
        if unknown := set(key.roles) - known:
            problems.append(
                f"[api_keys.{name}] roles: {', '.join(sorted(unknown))} unknown: neither "
                f"{' nor '.join(ROLES)} nor named by a route's start_roles"
            )
        if (other := tags.setdefault(owner_tag(name), name)) != name:
            problems.append(
                f"[api_keys.{name}]: its executions could not be told from those of "
                f"[api_keys.{other}] (the same owner tag); rename one"
            )
    return problems


def url_is_loopback(url: str | None) -> bool:
    return url is not None and is_loopback(urlsplit(url).hostname or "")


def route_problems(name: str, route: RouteSettings, http: HttpSettings) -> list[str]:
    problems = []
    default_wait, max_wait, max_body_bytes = route_limits(route, http)
    if min(default_wait, max_wait) < 0:
        problems.append(f"[routes.{name}] default_wait and max_wait: must not be negative")
    if default_wait > max_wait:
        problems.append(f"[routes.{name}] default_wait: must not exceed max_wait")
    if max_body_bytes < 1:
        problems.append(f"[routes.{name}] max_body_bytes: must be at least 1")
    if route.default_input is not None and len(json.dumps(route.default_input)) > max_body_bytes:
        problems.append(f"[routes.{name}] default_input: larger than max_body_bytes")
    if route.start_roles is not None and not route.start_roles:
        problems.append(f"[routes.{name}] start_roles: name at least one role, or leave it unset")
    return problems


def approval_link_problems(dashboard: DashboardSettings) -> list[str]:
    """Links take a public URL and a secret together (the approval topic and the approvals
    come from the stack: without them the daemon says at start that links are off)."""
    problems = []
    if bool(dashboard.public_url) != bool(dashboard.approval_link_secret):
        problems.append(
            "[dashboard] public_url and approval_link_secret: approval links need both"
        )
    if dashboard.public_url and not dashboard.public_url.startswith(("https://", "http://")):
        problems.append("[dashboard] public_url: expected an http(s):// URL")
    if dashboard.approval_link_secret and len(dashboard.approval_link_secret) < 32:
        problems.append("[dashboard] approval_link_secret: at least 32 characters")
    if dashboard.approval_link_ttl <= 0:
        problems.append("[dashboard] approval_link_ttl: must be positive")
    return problems


def validate(s: Settings, where: str, found: list[str]) -> None:
    """Every problem found (beyond those already ``found``), each on a line of its own."""
    problems = list(found)
    fail = problems.append
    fail_all = problems.extend
    uses_mqtt = s.daemon.completion == "mqtt"

    if not 0 <= s.http.port <= 65535:
        fail(f"[http] port: {s.http.port} is not a TCP port")
    for key in ("default_wait", "max_wait", "drain_timeout"):
        if getattr(s.http, key) < 0:
            fail(f"[http] {key}: must not be negative")
    if s.http.default_wait > s.http.max_wait:
        fail("[http] default_wait: must not exceed max_wait")
    for key in ("max_body_bytes", "max_held", "max_reattach_held", "retry_after"):
        if getattr(s.http, key) < 1:
            fail(f"[http] {key}: must be at least 1")
    if s.mqtt.port is not None and not 1 <= s.mqtt.port <= 65535:
        fail(f"[mqtt] port: {s.mqtt.port} is not a TCP port")
    if not NAME.fullmatch(s.mqtt.topic_root):
        fail("[mqtt] topic_root: use letters, digits, '-' and '_' only")
    if uses_mqtt and s.mqtt.transport == "tcp" and not s.mqtt.endpoint:
        fail("[mqtt] endpoint: required with transport = 'tcp'")
    if uses_mqtt and s.mqtt.transport == "mtls" and not (s.mqtt.cert_file and s.mqtt.key_file):
        fail("[mqtt] cert_file and key_file: required with transport = 'mtls'")
    if not 1 <= s.mqtt.reconnect_min_secs <= s.mqtt.reconnect_max_secs:
        fail("[mqtt] reconnect_min_secs: must be between 1 and reconnect_max_secs")
    if uses_mqtt and s.mqtt.transport in TOKEN_TRANSPORTS and not s.iotauth.issuer_url:
        fail(f"[iotauth] issuer_url: required with transport = '{s.mqtt.transport}'")
    if s.mqtt.transport not in TOKEN_TRANSPORTS and s.iotauth.issuer_url:
        fail(f"[iotauth]: tokens are not used with transport = '{s.mqtt.transport}'; remove it")
    if s.iotauth.issuer_url and not s.iotauth.issuer_url.startswith(("https://", "http://")):
        fail("[iotauth] issuer_url: expected an http(s):// URL")
    if s.iotauth.refresh_margin <= 0:
        fail("[iotauth] refresh_margin: must be positive")
    if s.mqtt.peak_completions_per_second <= 0:
        fail("[mqtt] peak_completions_per_second: must be positive")
    if not 0 < s.mqtt.connection_share <= 1:
        fail("[mqtt] connection_share: must be above 0 and at most 1")
    fail_all(approval_link_problems(s.dashboard))
    if s.mqtt.keep_alive_secs < 5:
        fail("[mqtt] keep_alive_secs: must be at least 5")
    if s.daemon.instance_id is not None and not NAME.fullmatch(s.daemon.instance_id):
        fail("[daemon] instance_id: 1-64 letters, digits, '-' or '_'")
    if s.dashboard.recent_executions < 1:
        fail("[dashboard] recent_executions: must be at least 1")
    queue = s.dashboard.approval_queue_url
    if queue is not None and not queue.startswith(("https://", "http://")):
        fail("[dashboard] approval_queue_url: expected the queue's http(s):// URL")
    if (queue is None) != (s.dashboard.approval_table is None):
        fail("[dashboard] approval_queue_url and approval_table: set both, or neither")
    if s.daemon.poll_interval <= 0:
        fail("[daemon] poll_interval: must be positive")
    for key in ("sfn_read_rate", "sfn_start_rate", "sweep_interval", "sweep_after"):
        if getattr(s.daemon, key) <= 0:
            fail(f"[daemon] {key}: must be positive")
    if s.sqs.queue_prefix is not None:
        if not NAME.fullmatch(s.sqs.queue_prefix):
            fail("[sqs] queue_prefix: use letters, digits, '-' and '_' only")
        # A generated instance id (notifier-<12 hex digits>) is 21 characters.
        elif len(s.sqs.queue_prefix) + len(s.daemon.instance_id or "x" * 21) > 80:
            fail("[sqs] queue_prefix: with the instance id, longer than a queue name may be (80)")
        if not (s.sqs.dead_letter_queue_arn or "").startswith("arn:aws"):
            fail("[sqs] dead_letter_queue_arn: required with queue_prefix (an SQS queue ARN)")
    elif s.sqs.dead_letter_queue_arn is not None:
        fail("[sqs] dead_letter_queue_arn: only used with queue_prefix; remove it")
    if not 0 <= s.sqs.wait_seconds <= 20:
        fail("[sqs] wait_seconds: between 0 and 20")
    for key in ("recent_completions", "recent_completions_bytes"):
        if getattr(s.daemon, key) < 0:
            fail(f"[daemon] {key}: must not be negative")
    if not s.s3.bucket:
        fail("[s3] bucket: required (the process data bucket)")
    if not s.routes:
        fail("no routes: add at least one [routes.<name>] with a state_machine")
    for name, route in s.routes.items():
        if not ROUTE_NAME.fullmatch(name) or name in RESERVED_PATHS:
            fail(
                f"[routes.{name}]: route names are lower-case letters, digits, '-' and '_', "
                f"and not one of {', '.join(sorted(RESERVED_PATHS))}"
            )
        if not STATE_MACHINE_ARN.fullmatch(route.state_machine):
            fail(f"[routes.{name}] state_machine: expected a state machine ARN")
        fail_all(route_problems(name, route, s.http))
    if s.http.require_api_key and not s.api_keys:
        fail("[http] require_api_key: true, but no [api_keys.<name>] is configured")
    for name, api_key in s.api_keys.items():
        if not SHA256_HEX.fullmatch(api_key.sha256):
            fail(f"[api_keys.{name}] sha256: expected 64 hex digits (the key's SHA-256)")
        if api_key.rate <= 0 or api_key.burst < 1:
            fail(f"[api_keys.{name}]: rate must be positive and burst at least 1")
    if s.tracing.enabled and otel_missing():
        fail(f"[tracing] enabled: needs OpenTelemetry, not installed: {OTEL_EXTRA}")
    fail_all(exposed(s, uses_mqtt))
    fail_all(api_key_problems(s))
    if problems:
        raise ConfigError("\n".join(f"{where}: {problem}" for problem in problems))
