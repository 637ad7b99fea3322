"""The daemon's settings: a frozen dataclass a section of the configuration, the patterns
their values must match, and :class:`ConfigError`, the one-line report of a problem with
them. :mod:`notifier.config_loader` reads them from a file and the environment;
:mod:`notifier.config_checks` checks them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from notifier.tracing import TracingSettings

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
ROUTE_NAME_PATTERN = "[a-z0-9][a-z0-9_-]{0,63}"
ROUTE_NAME = re.compile(ROUTE_NAME_PATTERN)
STATE_MACHINE_ARN = re.compile(
    r"arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:stateMachine:[A-Za-z0-9_-]{1,80}"
)


class ConfigError(Exception):
    """A configuration problem, described in one line."""


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 3000
    default_wait: float = 30.0
    """Seconds a request is held when the client states no ``Prefer: wait``."""
    max_wait: float = 120.0
    """Upper bound for ``Prefer: wait=N`` and ``?wait=N``."""
    max_body_bytes: int = 256 * 1024
    max_held: int = 1000
    """Requests that started a transaction held at once; beyond it new ones get 503."""
    max_reattach_held: int = 1000
    """Requests re-attached to a transaction (``GET /executions/<id>``) held at once, a
    budget of their own; beyond it new ones get 503."""
    retry_after: int = 5
    """``Retry-After`` seconds sent with 202 and 503."""
    drain_timeout: float = 10.0
    """On SIGTERM/SIGINT, seconds held requests may still finish before they get 202."""
    require_api_key: bool = True
    """Every endpoint but the health checks and the dashboard page needs an ``x-api-key`` from
    ``[api_keys.<name>]``."""


@dataclass(frozen=True)
class MqttSettings:
    transport: Literal["custom-auth", "custom-auth-websockets", "tcp", "mtls", "websockets"] = (
        "custom-auth"
    )
    """``custom-auth``: IoT Core over TLS (ALPN ``mqtt``) with a token from the iotauth issuer;
    ``custom-auth-websockets``: the same over WebSocket; ``tcp``: plain MQTT with such a token
    (the local broker only); ``mtls``: IoT Core with a device certificate; ``websockets``:
    IoT Core over WebSocket signed with AWS credentials (SigV4)."""
    endpoint: str | None = None
    """Broker host; unset means the account's IoT data endpoint (DescribeEndpoint)."""
    port: int | None = None
    """Unset: 443 for custom-auth and the websockets transports, 1883 for tcp, 8883 for mtls."""
    topic_root: str = "notifier"
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    """The CA to trust for the broker's certificate; unset: the system's (IoT Core's CA,
    Amazon Root CA 1, is among them). Relative paths in a file are relative to the file."""
    keep_alive_secs: int = 5
    """Seconds between pings: how soon a link that went silent is noticed. Also bounds the
    wait for CONNACK and each ping's answer (:func:`notifier.sources.mqtt.response_timeout_ms`)."""
    reconnect_min_secs: int = 1
    reconnect_max_secs: int = 5
    """Reconnect attempts back off from the first to the second."""
    connect_timeout: float = 30.0
    peak_completions_per_second: float = 300.0
    """The most completions per second this process is sized for. They are spread over as
    many connections as that needs, each given at most ``connection_share`` of AWS IoT
    Core's 100 messages per second per connection; connections open as the rate needs them
    and close when idle (see docs/mqtt-connections.md)."""
    connection_share: float = 0.5
    """The share of IoT Core's per-connection limit one connection is given (0 to 1). Half
    leaves room for a second's completions to come back twice as bunched as their starts
    were given out."""


@dataclass(frozen=True)
class IotAuthSettings:
    """The token issuer the daemon gets its MQTT tokens from (transports custom-auth, tcp)."""

    issuer_url: str | None = None
    """Base URL of the issuer (the stack's ``TokenIssuerUrl`` output). Requests to it are
    signed with SigV4 (``execute-api``) using the [aws] credentials, as API Gateway requires."""
    refresh_margin: float = 300.0
    """Seconds before a token expires when the daemon connects anew with a fresh one."""


TOKEN_TRANSPORTS = ("custom-auth", "custom-auth-websockets", "tcp")
# Paths of the daemon's own endpoints, which a route name would shadow.
RESERVED_PATHS = frozenset(
    {"executions", "healthz", "readyz", "metrics", "events", "approvals", "dashboard"}
)
SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class AwsSettings:
    """Where the AWS API is. ``endpoint_url`` unset means real AWS."""

    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None


@dataclass(frozen=True)
class DaemonSettings:
    instance_id: str | None = None
    """MQTT client id and subtopic; unset means one derived from the machine id and the HTTP
    port, the same after a restart (:mod:`notifier.identity`; logged at start)."""
    completion: Literal["mqtt", "poll"] = "mqtt"
    """``mqtt``: completions arrive over MQTT (with the [sqs] queue and DescribeExecution
    sweeps while MQTT is down); ``poll``: no MQTT at all, every held request is polled with
    DescribeExecution every ``poll_interval`` ([mqtt] and [iotauth] are not used)."""
    poll_interval: float = 1.5
    """Seconds between DescribeExecution calls for each held request in ``poll`` mode, and
    for re-attached executions whose completion is published to another instance."""
    sfn_read_rate: float = 5.0
    """This instance's share of the account's Step Functions read quotas: DescribeExecution
    calls a second, all of its worker processes together, with GetExecutionHistory and
    ListExecutions counted at what they cost of their own quotas (see
    docs/step-functions-budget.md). Every read draws on it: the sweeps of held requests,
    the safety net, re-attaches, polling and the dashboard. The default is half of the
    smallest region's DescribeExecution refill (10/s); the shares of all instances in an
    account and region together should stay below it."""
    sfn_start_rate: float = 150.0
    """This instance's share of the account's StartExecution refill: starts a second, all of
    its worker processes together. A start beyond it waits its turn (within the request's
    wait) rather than being throttled by Step Functions. The default is the refill of the
    smaller regions; us-east-1, us-west-2 and eu-west-1 refill 300 a second (see
    docs/quotas.md). The shares of all instances in an account and region together should
    stay below the refill."""
    sweep_interval: float = 60.0
    """While MQTT is up, seconds between the slow sweeps that describe held requests nothing
    has been heard of for ``sweep_after`` seconds (a completion lost on the way)."""
    sweep_after: float = 30.0
    """Seconds without word of a held, unresolved transaction before the slow sweep
    describes it; a re-attach to such a transaction asks Step Functions at once."""
    recent_completions: int = 10_000
    """Completed or 202-answered transactions remembered for quick re-attach."""
    recent_completions_bytes: int = 64 * 1024 * 1024
    """...and at most this many bytes of their results (the JSON they arrived as)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Logs are JSON lines when not on a terminal (journald), readable lines on one."""


@dataclass(frozen=True)
class SqsSettings:
    """This instance's own completion queue, fed by the stack's status forwarder."""

    queue_prefix: str | None = None
    """The stack's ``CompletionQueuePrefix`` output: the daemon creates and long-polls
    ``<queue_prefix><instance_id>``. Unset: no queue (MQTT and DescribeExecution only)."""
    dead_letter_queue_arn: str | None = None
    """Where messages that are not completions go (the ``StatusDeadLetterQueueArn`` output).
    Required with ``queue_prefix``."""
    wait_seconds: int = 20
    """Long-poll wait of each ReceiveMessage (0-20)."""


@dataclass(frozen=True)
class S3Settings:
    bucket: str = ""
    """Process data bucket (the ``ProcessDataBucketName`` stack output). Required."""


@dataclass(frozen=True)
class DashboardSettings:
    """The live page at ``/``, its event stream ``/events`` and the approvals API."""

    enabled: bool = True
    recent_executions: int = 200
    """Executions the page lists (the most recent first)."""
    approval_queue_url: str | None = None
    """The stack's ``ApprovalQueueUrl`` output: where workflows ask for approvals, listed at
    ``/approvals``. Unset: no approvals."""
    approval_table: str | None = None
    """The stack's ``ApprovalTableName`` output: the pending approvals every instance shares
    and decides. Required with ``approval_queue_url``."""
    approval_topic_arn: str | None = None
    """The stack's ``ApprovalTopicArn`` output: where each new request goes out as a pair of
    approve and reject links (e-mail, chat). Links are sent only with ``public_url`` and
    ``approval_link_secret`` set too."""
    public_url: str | None = None
    """This daemon's base URL as the links' readers reach it (``https://notifier.example``)."""
    approval_link_secret: str | None = None
    """The key that signs the links (HMAC-SHA256): the same at every instance, from the
    environment only (``NOTIFIER_DASHBOARD_APPROVAL_LINK_SECRET``), at least 32 characters."""
    approval_link_ttl: float = 86_400.0
    """Seconds a link is valid after it is sent."""


@dataclass(frozen=True)
class RouteSettings:
    state_machine: str = ""
    """State machine ARN. Required."""
    input: Literal["sidecar", "body"] = "sidecar"
    """``sidecar``: input ``{"processData": <txnId>, "subtopic"}``, answer carries the S3
    object as ``processData``; ``body``: input is the request body plus ``subtopic``."""
    workflow: Literal["standard", "express"] = "standard"
    """The state machine's type. Express ones are started with StartSyncExecution, and are
    answered by its result or by MQTT: they have no DescribeExecution and no status events."""
    default_input: Mapping[str, Any] | None = None
    """What a ``POST`` with an empty body and no ``Content-Type`` starts the route with.
    Unset: such a request is 400."""
    default_wait: float | None = None
    """Seconds a request is held without ``Prefer: wait``; unset: ``[http] default_wait``
    (at most the route's ``max_wait``)."""
    max_wait: float | None = None
    """Upper bound of ``Prefer: wait`` and ``?wait``; unset: ``[http] max_wait``."""
    max_body_bytes: int | None = None
    """Larger bodies get 413; unset: ``[http] max_body_bytes``."""
    start_roles: tuple[str, ...] | None = None
    """With API keys required: the roles (``[api_keys.<name>] roles``) of which a key needs
    one to start the route. Unset: every key may."""

    @property
    def describable(self) -> bool:
        """Whether Step Functions can be asked about its executions (Express: no)."""
        return self.workflow == "standard"


@dataclass(frozen=True)
class ApiKeySettings:
    sha256: str = ""
    """Hex SHA-256 of the key (``notifier apikey`` makes one). Required."""
    rate: float = 5.0
    """Sustained requests per second allowed with this key."""
    burst: int = 20
    """Requests allowed at once above the sustained rate."""
    max_held: int = 100
    """Requests this key may have held at once (starts and re-attaches together), so that
    no one key holds all of ``[http] max_held``; beyond it, 429."""
    roles: tuple[str, ...] = ()
    """None: a client, which starts workflows and sees its own executions. ``approver``:
    also decides approvals, but never those of an execution its own key started. ``admin``:
    sees every execution, the dashboard and the metrics. Any other role names what a route's
    ``start_roles`` asks for."""


@dataclass(frozen=True)
class Settings:
    http: HttpSettings = field(default_factory=HttpSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    iotauth: IotAuthSettings = field(default_factory=IotAuthSettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    sqs: SqsSettings = field(default_factory=SqsSettings)
    s3: S3Settings = field(default_factory=S3Settings)
    aws: AwsSettings = field(default_factory=AwsSettings)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)
    routes: Mapping[str, RouteSettings] = field(default_factory=dict)
    api_keys: Mapping[str, ApiKeySettings] = field(default_factory=dict)


def route_limits(route: RouteSettings, http: HttpSettings) -> tuple[float, float, int]:
    """A route's default wait, maximum wait and body limit: its own, else ``[http]``'s (the
    default wait no longer than the route's maximum)."""
    max_wait = route.max_wait if route.max_wait is not None else http.max_wait
    default_wait = route.default_wait
    if default_wait is None:
        default_wait = min(http.default_wait, max_wait)
    max_body_bytes = route.max_body_bytes
    return (
        default_wait,
        max_wait,
        max_body_bytes if max_body_bytes is not None else http.max_body_bytes,
    )
