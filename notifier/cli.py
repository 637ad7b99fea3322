"""The ``notifier`` command."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
from pathlib import Path

from notifier.config import ConfigError, load_settings
from notifier.daemon import Daemon, local_settings, serve
from notifier.deploy import DeployError
from notifier.local.broker import PortInUseError
from notifier.local.stack import LocalStack, LocalStackError, LocalStackSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notifier",
        description="Run AWS Step Functions workflows as synchronous HTTP calls.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_cmd = commands.add_parser(
        "serve",
        help="run the daemon against the endpoints its configuration names (AWS by default)",
        description="Run the notifier daemon. Every configuration key can be overridden by an "
        "environment variable NOTIFIER_<SECTION>_<KEY>.",
    )
    serve_cmd.add_argument(
        "--config", type=Path, help="TOML configuration file (see config/notifier.toml)"
    )
    serve_cmd.add_argument("--log-level", default="INFO")

    local = commands.add_parser(
        "local",
        help="run the embedded local AWS stack on loopback (no AWS account needed)",
        description="Start an AWS API endpoint (moto) and an MQTT broker (amqtt) on loopback "
        "and deploy the notifier stack into them.",
    )
    defaults = LocalStackSettings()
    local.add_argument("--host", default=defaults.host, help="address to listen on")
    local.add_argument(
        "--aws-port", type=int, default=defaults.aws_port, help="AWS API endpoint port"
    )
    local.add_argument("--mqtt-port", type=int, default=defaults.mqtt_port, help="MQTT port")
    local.add_argument(
        "--http-port", type=int, default=3000, help="the daemon's HTTP port (config/local.toml)"
    )
    local.add_argument("--stage", default=defaults.stage, help="the template's Stage parameter")
    local.add_argument("--stack-name", default=defaults.stack_name)
    local.add_argument("--topic-root", default=defaults.topic_root)
    local.add_argument("--log-level", default="INFO")
    return parser


def banner(stack: LocalStack, daemon: Daemon) -> str:
    assert stack.endpoint is not None
    url = stack.endpoint.url
    mqtt = f"{stack.settings.host}:{stack.broker.port}"
    outputs = "\n".join(f"    {k:<28} {v}" for k, v in sorted(stack.outputs.items()))
    hello = stack.outputs.get("HelloStateMachineArn", "<HelloStateMachineArn>")
    root = stack.settings.topic_root
    routes = ", ".join(f"/{name}" for name in daemon.settings.routes)
    return f"""\
notifier local stack is up (Ctrl-C stops it)
  notifier daemon   {daemon.url}   (instance {daemon.instance_id}; routes {routes})
  AWS API endpoint  {url}   (moto; any credentials, region {stack.aws_settings.region})
  MQTT broker       mqtt://{mqtt}   (amqtt, standing in for AWS IoT Core)
  stack {stack.settings.stack_name!r} outputs:
{outputs}

Try, in another terminal:
  curl -sS -X POST {daemon.url}/p1 -H 'content-type: application/json' -d '{{"foo":"foo val"}}'
  curl -sS -X POST {daemon.url}/hello -H 'content-type: application/json' -d '{{"waitSeconds":2}}'
  export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1
  mosquitto_sub -h {stack.settings.host} -p {stack.broker.port} -t '{root}/#' -v
  aws --endpoint-url {url} stepfunctions start-execution \\
      --state-machine-arn {hello} --input '{{"subtopic": "demo", "waitSeconds": 1}}'
"""


async def run_local(args: argparse.Namespace) -> int:
    settings = LocalStackSettings(
        host=args.host,
        aws_port=args.aws_port,
        mqtt_port=args.mqtt_port,
        stack_name=args.stack_name,
        stage=args.stage,
        topic_root=args.topic_root,
        log_level=args.log_level,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with LocalStack(settings) as stack:
        daemon_settings = local_settings(stack, env=os.environ)
        daemon_settings = dataclasses.replace(
            daemon_settings, http=dataclasses.replace(daemon_settings.http, port=args.http_port)
        )
        status = await serve(
            daemon_settings,
            stop=stop,
            on_ready=lambda daemon: print(banner(stack, daemon), flush=True),
            port_hint="--http-port",
        )
        print("stopping...", flush=True)
    return status


def run_serve(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, os.environ)
    return asyncio.run(serve(settings))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for chatty in ("transitions", "amqtt", "botocore", "aiobotocore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        if args.command == "local":
            sys.exit(asyncio.run(run_local(args)))
        if args.command == "serve":
            sys.exit(run_serve(args))
    except (PortInUseError, LocalStackError, DeployError, ConfigError) as exc:
        print(f"notifier: {exc}", file=sys.stderr)
        sys.exit(2)
