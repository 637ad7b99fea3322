"""AWS's quotas as the local stack enforces them: the documented values, and how to change them.

IoT Core's message broker limits each connection (docs/quotas.md has the figures and their
sources); Step Functions throttles its API per account and region with token buckets. The
stack enforces both by default, with the values of us-east-1, its region. ``notifier local
--quotas off`` turns them off, ``--quota NAME=VALUE`` sets one. Needs nothing of the local
extra, so that the command line can list the names without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Bucket:
    """A token bucket: ``size`` calls at once, refilled by ``refill`` calls a second."""

    size: float
    refill: float

    @classmethod
    def parse(cls, text: str) -> Bucket:
        size, slash, refill = text.partition("/")
        if not slash:
            raise ValueError("a bucket is SIZE/REFILL, e.g. 300/15")
        bucket = cls(float(size), float(refill))
        if bucket.size < 1 or bucket.refill <= 0:
            raise ValueError("a bucket's size must be at least 1 and its refill positive")
        return bucket

    def __str__(self) -> str:
        return f"{self.size:g}/{self.refill:g}"


SFN_BUCKETS = {
    "StartExecution": Bucket(1300, 300),
    "DescribeExecution": Bucket(300, 15),
    "GetExecutionHistory": Bucket(400, 20),
    "ListExecutions": Bucket(200, 5),
    "StopExecution": Bucket(1000, 200),
    "SendTaskSuccess": Bucket(3000, 500),
    "SendTaskFailure": Bucket(3000, 500),
    "SendTaskHeartbeat": Bucket(3000, 500),
}
"""Step Functions' API throttling in us-east-1, us-west-2 and eu-west-1, per account and
region (the other regions have smaller ones)."""

IOT_LIMITS = {
    "iot-publish-rate": "publishes a second per connection, inbound and delivered each",
    "iot-throughput": "bytes a second per connection, inbound and delivered each",
    "iot-payload": "bytes of one publish's payload (MQTT and the HTTP data plane)",
    "iot-subscriptions": "subscriptions per connection",
    "iot-connect-rate": "CONNECTs a second per client id",
}
"""The option name of each IoT Core limit (a :class:`QuotaSettings` field), and what it
counts; the field's default is AWS's value."""
WHOLE_NUMBERS = ("iot_payload", "iot_subscriptions")


def sfn_option(operation: str) -> str:
    """``DescribeExecution`` -> ``sfn-describe-execution``."""
    words = "".join(f"-{c.lower()}" if c.isupper() else c for c in operation)
    return f"sfn{words}"


SFN_OPTIONS = {sfn_option(operation): operation for operation in SFN_BUCKETS}


@dataclass(frozen=True)
class QuotaSettings:
    enabled: bool = True
    iot_publish_rate: float = 100
    iot_throughput: float = 512 * 1024
    iot_payload: int = 128_000
    iot_subscriptions: int = 50
    iot_connect_rate: float = 1
    sfn: dict[str, Bucket] = field(default_factory=lambda: dict(SFN_BUCKETS))
    """Step Functions' token bucket of each throttled operation."""

    def with_values(self, assignments: Iterable[str]) -> QuotaSettings:
        """These settings with ``NAME=VALUE`` assignments applied (names: :func:`names`)."""
        settings = self
        for assignment in assignments:
            name, equals, value = assignment.partition("=")
            name = name.strip()
            if not equals:
                raise ValueError(f"--quota {assignment!r}: NAME=VALUE")
            try:
                if name in SFN_OPTIONS:
                    buckets = {**settings.sfn, SFN_OPTIONS[name]: Bucket.parse(value)}
                    settings = dataclasses.replace(settings, sfn=buckets)
                elif name in IOT_LIMITS:
                    attribute = name.replace("-", "_")
                    number = float(value)
                    if number <= 0:
                        raise ValueError("it must be positive")
                    values: dict[str, Any] = {
                        attribute: int(number) if attribute in WHOLE_NUMBERS else number
                    }
                    settings = dataclasses.replace(settings, **values)
                else:
                    raise ValueError(f"no such quota (one of {', '.join(names())})")
            except ValueError as exc:
                raise ValueError(f"--quota {assignment!r}: {exc}") from None
        return settings

    def to_json(self) -> str:
        values = dataclasses.asdict(self)
        values["sfn"] = {operation: str(bucket) for operation, bucket in self.sfn.items()}
        return json.dumps(values)

    @classmethod
    def from_json(cls, text: str) -> QuotaSettings:
        values: dict[str, Any] = json.loads(text)
        values["sfn"] = {op: Bucket.parse(bucket) for op, bucket in values["sfn"].items()}
        return cls(**values)


def names() -> list[str]:
    return [*IOT_LIMITS, *SFN_OPTIONS]


def describe() -> str:
    """Every quota's option name, documented value and meaning, for ``--help``."""
    defaults = QuotaSettings()
    iot = "; ".join(
        f"{name}={getattr(defaults, name.replace('-', '_')):g} ({meaning})"
        for name, meaning in IOT_LIMITS.items()
    )
    buckets = ", ".join(f"{option}={SFN_BUCKETS[op]}" for option, op in SFN_OPTIONS.items())
    return f"{iot}; Step Functions' token buckets, SIZE/REFILL a second: {buckets}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--quotas on|off`` and ``--quota NAME=VALUE``, for the commands that run the stack."""
    parser.add_argument(
        "--quotas",
        choices=("on", "off"),
        default="on",
        help="enforce AWS's quotas as AWS does (on, the default) or not at all (off)",
    )
    parser.add_argument(
        "--quota",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"set one quota (repeatable); the names and their AWS values: {describe()}",
    )


def from_arguments(args: argparse.Namespace) -> QuotaSettings:
    """The quotas :func:`add_arguments` asked for; ValueError for a wrong ``--quota``."""
    return QuotaSettings(enabled=args.quotas == "on").with_values(args.quota)
