"""Reading the daemon's settings (:mod:`notifier.config`): a TOML file, then
``NOTIFIER_<SECTION>_<KEY>`` environment overrides, then the checks of
:mod:`notifier.config_checks`.

Every problem is reported as one :class:`~notifier.config.ConfigError` line naming the file,
section and key. Routes are sections ``[routes.<name>]``; their overrides are
``NOTIFIER_ROUTES_<NAME>_<KEY>`` (the route name upper-cased, ``-`` written as ``_``).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from notifier.config import (
    ApiKeySettings,
    AwsSettings,
    ConfigError,
    DaemonSettings,
    DashboardSettings,
    HttpSettings,
    IotAuthSettings,
    MqttSettings,
    RouteSettings,
    S3Settings,
    Settings,
    SqsSettings,
)
from notifier.config_checks import secrets_in_file, validate
from notifier.tracing import TracingSettings

ENV_PREFIX = "NOTIFIER_"
CONFIG_ENV = "NOTIFIER_CONFIG"
"""The environment variable naming the configuration file of ``notifier serve``."""
DEFAULT_CONFIG = Path("/etc/notifier/notifier.toml")
"""The configuration file ``notifier serve`` reads when none is named, if it exists."""
FILE_KEYS = {"mqtt": ("cert_file", "key_file", "ca_file")}
"""Settings that name files: relative to the configuration file they are written in."""
_REPLACED = {
    ("daemon", "reconcile_rate"): "replaced by sfn_read_rate, the share of the account's "
    "Step Functions reads of the whole instance (all its workers together)",
}
"""Settings that no longer exist, and what to write instead."""

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
    if hint is int or hint is float:
        # An int is a float setting's value too; a float is not an int setting's.
        accepted = int if hint is int else int | float
        if from_env and isinstance(value, str):
            try:
                return hint(value)
            except ValueError:
                pass
        elif isinstance(value, accepted) and not isinstance(value, bool):
            return hint(value)
        expected = "an integer" if hint is int else "a number"
        raise ConfigError(f"{label}: expected {expected}, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{label}: expected a string, got {value!r}")
    raise TypeError(f"unsupported setting type {hint!r}")  # a programming error, not config
