"""``notifier token``: MQTT credentials from the token issuer, printed as one JSON object.

By default from the local stack's issuer (``notifier/local/local.toml``); with ``--config``
from the one that file names, e.g. the stack's API in AWS. Either way the request is
SigV4-signed with the file's [aws] credentials (else the usual AWS environment). The
endpoint a token names is MQTT over TLS (IoT Core's, or the local broker's TLS port): the
credentials carry the CA to trust (``caFile``: [mqtt] ca_file, else the system's CA bundle)
and the ALPN protocol.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
from pathlib import Path
from typing import Any

from notifier.aws.iot_tokens import TokenError, TokenIssuer
from notifier.config import MqttSettings
from notifier.config_loader import load_settings


def add_parser(commands: Any, default_config: Path) -> None:
    """Add ``notifier token``, reading the issuer from ``default_config`` unless told."""
    token = commands.add_parser(
        "token",
        help="print MQTT credentials (username, password, clientId, topicFilters) as JSON",
        description="Get a short-lived MQTT token from the token issuer and print what any "
        "MQTT client needs to connect with it, e.g. mosquitto_sub -h <endpoint> -p <port> "
        "--cafile <caFile> --tls-alpn <alpn> -u <username> -P <password> -i <clientId> "
        "-t <topicFilters[0]>.",
    )
    scope = token.add_mutually_exclusive_group()
    scope.add_argument(
        "--subtopic", help="receive <topic_root>/<subtopic>/# (default: [daemon] instance_id)"
    )
    scope.add_argument(
        "--read-only",
        action="store_true",
        help="a dashboard token: receive the status topics only",
    )
    token.add_argument(
        "--config",
        type=Path,
        default=default_config,
        help=f"the configuration naming the issuer (default: {default_config})",
    )
    token.add_argument("--log-level", default="WARNING")


async def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, os.environ)
    subtopic = args.subtopic or settings.daemon.instance_id
    if not args.read_only and not subtopic:
        print("notifier: give --subtopic or --read-only", file=sys.stderr)
        return 2
    try:
        issuer = TokenIssuer(settings.iotauth, settings.aws)
        fetch = issuer.dashboard_token() if args.read_only else issuer.daemon_token(str(subtopic))
        token = await fetch
    except TokenError as exc:
        print(f"notifier: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({**token.credentials(), **tls_credentials(settings.mqtt)}, indent=2))
    return 0


def tls_credentials(mqtt: MqttSettings) -> dict[str, Any]:
    """What a client needs to connect over TLS to the endpoint a token names; nothing for a
    configuration that connects without TLS (``tcp``)."""
    if mqtt.transport == "tcp":
        return {}
    ca_file = mqtt.ca_file or ssl.get_default_verify_paths().cafile
    return {**({"caFile": str(Path(ca_file).resolve())} if ca_file else {}), "alpn": "mqtt"}
