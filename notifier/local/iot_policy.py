"""Evaluates AWS IoT policy documents as IoT Core does for a custom authorizer's answer.

A request is allowed when some ``Allow`` statement matches its action and resource and no
``Deny`` statement does. Actions match case-insensitively and resources case-sensitively,
both with the policy wildcards ``*`` (any characters, '/' included) and ``?`` (one
character); MQTT's ``+`` and ``#`` in a ``topicfilter/`` resource are literal characters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class Statement:
    allow: bool
    actions: tuple[str, ...]
    resources: tuple[str, ...]

    def matches(self, action: str, resource: str) -> bool:
        return any(_pattern(a.lower()).fullmatch(action.lower()) for a in self.actions) and any(
            _pattern(r).fullmatch(resource) for r in self.resources
        )


class IotPolicy:
    def __init__(self, statements: Iterable[Statement]) -> None:
        self.statements = tuple(statements)

    @classmethod
    def from_documents(cls, documents: Iterable[str]) -> IotPolicy:
        """Parse the JSON policy documents of an authorizer's answer; ValueError if malformed."""
        statements: list[Statement] = []
        for document in documents:
            parsed: Any = json.loads(document)
            listed = parsed.get("Statement") if isinstance(parsed, dict) else None
            if isinstance(listed, dict):
                listed = [listed]
            if not isinstance(listed, list):
                raise ValueError("a policy document without statements")
            statements.extend(_statement(s) for s in listed)
        return cls(statements)

    def allows(self, action: str, resource: str) -> bool:
        matching = [s for s in self.statements if s.matches(action, resource)]
        return any(s.allow for s in matching) and all(s.allow for s in matching)


def _statement(raw: Any) -> Statement:
    if not isinstance(raw, dict) or raw.get("Effect") not in ("Allow", "Deny"):
        raise ValueError(f"malformed statement {raw!r}")
    return Statement(raw["Effect"] == "Allow", _strings(raw, "Action"), _strings(raw, "Resource"))


def _strings(raw: dict[str, Any], key: str) -> tuple[str, ...]:
    value = raw.get(key)
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"statement {key} must be a string or a list of strings")
    return tuple(values)


@lru_cache(maxsize=1024)
def _pattern(glob: str) -> re.Pattern[str]:
    return re.compile(
        "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
    )
