"""Typed daemon settings: a TOML file, then ``NOTIFIER_<SECTION>_<KEY>`` environment overrides.

Every problem is reported as one :class:`ConfigError` line naming the file, section and key.
Routes are sections ``[routes.<name>]``; their overrides are ``NOTIFIER_ROUTES_<NAME>_<KEY>``
(the route name upper-cased, ``-`` written as ``_``).
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from notifier.tracing import TracingSettings

ENV_PREFIX = "NOTIFIER_"
CONFIG_ENV = "NOTIFIER_CONFIG"
"""The environment variable naming the configuration file of ``notifier serve``."""
DEFAULT_CONFIG = Path("/etc/notifier/notifier.toml")
"""The configuration file ``notifier serve`` reads when none is named, if it exists."""
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
    connection_share: float = 0.8
    """The share of IoT Core's per-connection limit one connection is given (0 to 1)."""


@dataclass(frozen=True)
class IotAuthSettings:
    """The token issuer the daemon gets its MQTT tokens from (transports custom-auth, tcp)."""

    issuer_url: str | None = None
    """Base URL of the issuer (the stack's ``TokenIssuerUrl`` output). Requests to it are
    signed with SigV4 (``execute-api``) using the [aws] credentials, as API Gateway requires."""
    refresh_margin: float = 300.0
    """Seconds before a token expires when the daemon connects anew with a fresh one."""


TOKEN_TRANSPORTS = ("custom-auth", "custom-auth-websockets", "tcp")
FILE_KEYS = {"mqtt": ("cert_file", "key_file", "ca_file")}
"""Settings that name files: relative to the configuration file they are written in."""
# Paths of the daemon's own endpoints, which a route name would shadow.
RESERVED_PATHS = frozenset(
    {"executions", "healthz", "readyz", "metrics", "events", "approvals", "dashboard"}
)
SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_REPLACED = {
    ("daemon", "reconcile_rate"): "replaced by sfn_read_rate, the share of the account's "
    "Step Functions reads of the whole instance (all its workers together)",
}
"""Settings that no longer exist, and what to write instead."""


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


_SECTIONS: dict[str, type[Any]] = {
    "http": HttpSettings,
    "mqtt": MqttSettings,
    "iotauth": IotAuthSettings,
    "daemon": DaemonSettings,
    "sqs": SqsSettings,
    "s3": S3Settings,
    "aws": AwsSettings,
    "dashboard": DashboardSettings,
    "tracing": TracingSettings,
}


def config_path(
    given: Path | None, env: Mapping[str, str], default: Path = DEFAULT_CONFIG
) -> Path | None:
    """The configuration file to read: ``given``, else :data:`CONFIG_ENV`'s, else ``default``
    when it exists; None means the environment alone."""
    if given is not None:
        return given
    if named := env.get(CONFIG_ENV):
        return Path(named)
    return default if default.is_file() else None


def load_settings(path: Path | None, env: Mapping[str, str]) -> Settings:
    """Read ``path`` (if given), apply ``NOTIFIER_*`` overrides from ``env`` and validate."""
    where = str(path) if path is not None else "config"
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    for key in raw:
        if key not in _SECTIONS and key not in ("routes", "api_keys"):
            raise ConfigError(f"{where}: unknown section [{key}]")

    sections = {
        name: _build(cls, _files_relative_to(path, _table(raw, name, where), name), env,
                     _env_prefix(name), where, name)
        for name, cls in _SECTIONS.items()
    }  # fmt: skip
    routes = _named_tables(raw, "routes", RouteSettings, env, where)
    api_keys = _named_tables(raw, "api_keys", ApiKeySettings, env, where)

    settings = Settings(routes=routes, api_keys=api_keys, **sections)
    # Imported here: the checks read the settings' types and constants from this module.
    from notifier.config_checks import secrets_in_file, validate

    validate(settings, where, secrets_in_file(raw, settings))
    return settings


def _named_tables(
    raw: dict[str, Any], kind: str, cls: type[Any], env: Mapping[str, str], where: str
) -> dict[str, Any]:
    """``[<kind>.<name>]`` tables; overrides are ``NOTIFIER_<KIND>_<NAME>_<KEY>``."""
    tables = raw.get(kind, {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{where}: [{kind}] must be a table of [{kind}.<name>] tables")
    built = {}
    for name, table in tables.items():
        label = f"{kind}.{name}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [{label}] must be a table")
        built[name] = _build(cls, table, env, _env_prefix(f"{kind}_{name}"), where, label)
    return built


def _files_relative_to(path: Path | None, table: dict[str, Any], section: str) -> dict[str, Any]:
    """``table`` with its relative file names (:data:`FILE_KEYS`) made relative to ``path``."""
    relative = {
        key: str(path.parent / value)
        for key in FILE_KEYS.get(section, ())
        if path is not None and isinstance(value := table.get(key), str)
        and not Path(value).is_absolute()
    }  # fmt: skip
    return {**table, **relative}


def _env_prefix(section: str) -> str:
    return f"{ENV_PREFIX}{section.upper().replace('-', '_')}_"


def _table(raw: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [{name}] must be a table")
    return table


def _build(
    cls: type[Any],
    table: Mapping[str, Any],
    env: Mapping[str, str],
    env_prefix: str,
    where: str,
    section: str,
) -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in table:
        if (section, key) in _REPLACED:
            raise ConfigError(f"{where}: [{section}] {key}: {_REPLACED[section, key]}")
        if key not in names:
            raise ConfigError(f"{where}: [{section}] unknown key {key!r}")
    values: dict[str, Any] = {}
    for name in names:
        env_key = f"{env_prefix}{name.upper()}"
        if env_key in env:
            values[name] = _coerce(hints[name], env[env_key], f"{env_key}", from_env=True)
        elif name in table:
            values[name] = _coerce(hints[name], table[name], f"{where}: [{section}] {name}")
    return cls(**values)


def _coerce(hint: Any, value: Any, label: str, from_env: bool = False) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        if from_env and value == "":
            return None
        return _coerce(options[0], value, label, from_env)
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ConfigError(f"{label}: expected one of {', '.join(choices)}, got {value!r}")
        return value
    if origin is Mapping:
        if from_env and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        if isinstance(value, dict):
            return value
        raise ConfigError(f"{label}: expected a table (a JSON object in the environment)")
    if origin is tuple:
        if from_env and isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return tuple(value)
        raise ConfigError(f"{label}: expected a list of strings")
    if hint is bool:
        if from_env and isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if from_env and isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{label}: expected true or false, got {value!r}")
    if hint is int:
        if from_env and isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{label}: expected an integer, got {value!r}")
    if hint is float:
        if from_env and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        elif isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{label}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{label}: expected a string, got {value!r}")
    raise TypeError(f"unsupported setting type {hint!r}")  # a programming error, not config


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
