"""Configurations refused at start as unsafe, each with a one-line reason: API keys off, plain
MQTT or a plain-HTTP token issuer anywhere but loopback; a secret written in the configuration
file; and API keys whose roles, budgets or owner tags would not hold."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from notifier.apikeys import ROLES, owner_tag
from notifier.loopback import is_loopback

if TYPE_CHECKING:
    from notifier.config import Settings

SECRETS = {("aws", "secret_access_key"): "AWS_SECRET_ACCESS_KEY"}
"""Settings that are secrets, with the environment variable to set instead: not in the file,
which is installed world-readable, but in the unit's ``EnvironmentFile=`` or a
``LoadCredential=`` file (see config/notifier.service)."""


def secrets_in_file(raw: Mapping[str, Any], settings: Settings) -> list[str]:
    """A secret written in the file, but for a loopback AWS endpoint (the local stack),
    whose credentials are published."""
    if url_is_loopback(settings.aws.endpoint_url):
        return []
    return [
        f"[{section}] {key}: a secret does not belong in the configuration file; set "
        f"{variable} in the environment file or use a LoadCredential= file (see "
        "config/notifier.service)"
        for (section, key), variable in SECRETS.items()
        if key in raw.get(section, {})
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
