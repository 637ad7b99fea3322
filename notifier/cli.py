"""The ``notifier`` command."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from botocore.exceptions import BotoCoreError, ClientError

from notifier import __version__
from notifier.apikeys import hash_key, new_key
from notifier.aws.clients import AwsClients
from notifier.bench import run as bench
from notifier.config import AwsSettings, ConfigError, Settings
from notifier.config_loader import CONFIG_ENV, DEFAULT_CONFIG, config_path, load_settings
from notifier.daemon import Daemon, serve
from notifier.local import quotas
from notifier.local.daemon_config import local_settings
from notifier.local.ports import CannotListenError, Listener, PortInUseError, check_free
from notifier.local.settings import LOCAL_CONFIG, LOCAL_WORK_ROOT, LocalStackSettings
from notifier.logs import set_level, setup_logging
from notifier.loopback import is_loopback
from notifier.ops import cleanup, token_cli
from notifier.ops.deploy import DeployError, default_artifacts_bucket, deploy_stack
from notifier.ops.workers import supervise
from notifier.topics import completions_filter

if TYPE_CHECKING:
    from notifier.local.stack import LocalStack

# The commands that run the local stack, and what they need beyond the daemon's own
# dependencies: the `local` extra.
LOCAL_COMMANDS = ("local", "bench")
LOCAL_EXTRA_MODULES = ("moto", "amqtt")
LOCAL_EXTRA = "pip install 'notifier[local]'"

# The exit status (sysexits.h's EX_CONFIG) of a configuration that cannot be used: starting
# again will not mend it, so the systemd unit does not (RestartPreventExitStatus).
EX_CONFIG = 78


def loopback_address(host: str) -> str:
    """``notifier local --host``: only loopback, since the stack's credentials are public."""
    if not is_loopback(host):
        raise argparse.ArgumentTypeError(
            f"{host!r} is not a loopback address: the local stack's credentials are published, "
            "so it listens on loopback only"
        )
    return host


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notifier",
        description="Run AWS Step Functions workflows as synchronous HTTP calls.",
    )
    parser.add_argument("--version", action="version", version=f"notifier {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_cmd = commands.add_parser(
        "serve",
        help="run the daemon against the endpoints its configuration names (AWS by default)",
        description="Run the notifier daemon. Every configuration key can be overridden by an "
        "environment variable NOTIFIER_<SECTION>_<KEY>. Exits 78 (EX_CONFIG) when the "
        "configuration cannot be used.",
    )
    serve_cmd.add_argument(
        "--config",
        type=Path,
        help=f"TOML configuration file (see config/notifier.toml); default: ${CONFIG_ENV}, "
        f"else {DEFAULT_CONFIG} if it exists, else the environment alone",
    )
    serve_cmd.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="run N worker processes sharing the port (SO_REUSEPORT), each an instance of its "
        "own with its instance id suffixed -1..-N; default 1: the daemon alone",
    )

    deploy = commands.add_parser(
        "deploy",
        help="package statemachines/template.yaml and create or update its CloudFormation stack",
        description="Inline the ASL, zip and upload the Lambda code, create or update the stack, "
        "wait for it and print its outputs. AWS credentials and region come from the usual AWS "
        "environment.",
    )
    deploy.add_argument("--stack", required=True, help="stack name")
    deploy.add_argument("--stage", required=True, help="the template's Stage parameter")
    deploy.add_argument("--topic-root", default="notifier", help="the TopicRoot parameter")
    deploy.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another template parameter (repeatable)",
    )
    deploy.add_argument("--endpoint-url", help="an AWS API endpoint other than AWS's own")
    deploy.add_argument("--region", help="AWS region (default: from the AWS environment)")
    deploy.add_argument("--profile", help="AWS profile")
    deploy.add_argument(
        "--artifacts-bucket", help="bucket for the Lambda zips (default: created per account)"
    )
    deploy.add_argument("--json", action="store_true", help="print the outputs as one JSON object")
    deploy.add_argument("--log-level", default="WARNING")

    apikey = commands.add_parser(
        "apikey",
        help="make a new API key and print it with its configuration section",
        description="Print a new random API key, and the [api_keys.NAME] section (holding only "
        "its SHA-256) to add to the daemon's configuration.",
    )
    apikey.add_argument(
        "name", type=key_name, help="a name for the key's holder, e.g. ci or dashboard"
    )
    apikey.add_argument("--rate", type=float, default=5.0, help="requests per second")
    apikey.add_argument("--burst", type=int, default=20, help="requests at once above the rate")
    apikey.add_argument("--log-level", default="WARNING")

    local = commands.add_parser(
        "local",
        help="run the embedded local AWS stack on loopback (no AWS account needed)",
        description="Start an AWS API endpoint (moto) and an MQTT broker (amqtt) on loopback "
        "and deploy the notifier stack into them.",
    )
    defaults = LocalStackSettings()
    local.add_argument(
        "--host",
        type=loopback_address,
        default=defaults.host,
        help="loopback address to listen on (the stack is as open as its credentials)",
    )
    ports = {
        "--aws-port": (defaults.aws_port, "AWS API endpoint port"),
        "--mqtt-port": (defaults.mqtt_port, "plain MQTT port (tcp)"),
        "--mqtt-tls-port": (defaults.mqtt_tls_port, "MQTT over TLS, ALPN mqtt (custom-auth, mtls)"),
        "--mqtt-wss-port": (defaults.mqtt_wss_port, "MQTT over WebSockets over TLS port"),
        "--issuer-port": (defaults.issuer_port, "token API port (SigV4, local credentials)"),
        "--http-port": (3000, "the daemon's HTTP port"),
    }  # fmt: skip
    for option, (default, description) in ports.items():
        local.add_argument(option, type=int, default=default, help=f"{description}; 0: any free")
    local.add_argument(
        "--work-dir",
        type=Path,
        help="the stack's files: its CA and the broker's certificate "
        "(default: build/local/<stack name> in the source tree)",
    )
    local.add_argument("--topic-root", default=defaults.topic_root)
    local.add_argument("--log-level", default="INFO")
    quotas.add_arguments(local)

    clean = commands.add_parser(
        "cleanup",
        help="delete the completion queues of instances silent for long (retired ones)",
        description="Each running instance tags its completion queue with when it was last "
        "seen, every hour. Delete the queues named [sqs] queue_prefix... whose tag is older "
        "than --silent-for; queues without the tag are kept.",
    )
    clean.add_argument(
        "--config",
        type=Path,
        help=f"the daemon's configuration (its [sqs] and [aws]); default: ${CONFIG_ENV}, "
        f"else {DEFAULT_CONFIG} if it exists",
    )
    clean.add_argument(
        "--silent-for",
        type=cleanup.silence,
        default=cleanup.DEFAULT_SILENCE,
        metavar="DURATION",
        help="delete queues whose instance was last seen longer ago than this, e.g. 36h or "
        "7d (default 7d; at least 2h)",
    )
    clean.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    clean.add_argument("--log-level", default="WARNING")

    token_cli.add_parser(commands, default_config=LOCAL_CONFIG)
    bench.add_parser(commands)
    return parser


def positive_int(text: str) -> int:
    """An argument that is a whole number, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return value


def key_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text):
        raise argparse.ArgumentTypeError(f"{text!r}: use letters, digits, '-' and '_'")
    return text


def banner(stack: LocalStack, daemon: Daemon) -> str:
    assert stack.endpoint is not None
    url = stack.endpoint.url
    host = stack.settings.host
    mqtt, tls = f"{host}:{stack.broker.port}", f"{host}:{stack.broker.tls_port}"
    wss = f"{host}:{stack.broker.wss_port}"
    outputs = "\n".join(f"    {k:<28} {v}" for k, v in sorted(stack.outputs.items()))
    hello = stack.outputs.get("HelloStateMachineArn", "<HelloStateMachineArn>")
    demo_topics = completions_filter(stack.settings.topic_root, "demo")
    routes = ", ".join(f"/{name}" for name in daemon.settings.routes)
    enforced = stack.settings.quotas.enabled
    quota_state = "enforced as AWS does (docs/quotas.md)" if enforced else "off (--quotas off)"
    return f"""\
notifier local stack is up (Ctrl-C stops it)
  notifier daemon   {daemon.url}   (instance {daemon.instance_id}; routes {routes})
  dashboard         {daemon.url}/   (live executions, details, approvals)
  AWS API endpoint  {url}   (moto; SigV4 with local/local, region {stack.aws_settings.region})
  MQTT broker       mqtts://{tls}   (amqtt, standing in for AWS IoT Core; TLS, ALPN mqtt)
                    wss://{wss}/mqtt   mqtt://{mqtt}   (token required on each)
  broker's CA       {stack.ca_file}
  daemon MQTT       transport {daemon.settings.mqtt.transport!r}, port {daemon.settings.mqtt.port}
  token API         {stack.issuer_url}   (SigV4, credentials local/local, as in local.toml)
  AWS quotas        {quota_state}
  stack {stack.settings.stack_name!r} outputs:
{outputs}

Try, in another terminal:
  curl -i -X POST {daemon.url}/p1      # ProcessA with its default input
  curl -sS -X POST {daemon.url}/hello -H 'content-type: application/json' -d '{{"waitSeconds":2}}'
  curl -sS -X POST {daemon.url}/hello-express -H 'content-type: application/json' \
      -d '{{"who":"express"}}'   # an Express workflow, answered by StartSyncExecution
  curl -sS -X POST {daemon.url}/archive -H 'content-type: application/json' \\
      -d '{{"approval_needed": true}}'   # then approve it at /
  export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1
  notifier token --subtopic demo > token.json     # MQTT credentials for {demo_topics}
  mosquitto_sub -h {host} -p {stack.broker.tls_port} --cafile {stack.ca_file} \\
      --tls-alpn mqtt -V mqttv311 -v \\
      -u "$(jq -r .username token.json)" -P "$(jq -r .password token.json)" \\
      -i "$(jq -r .clientId token.json)" -t '{demo_topics}'
  aws --endpoint-url {url} stepfunctions start-execution \\
      --state-machine-arn {hello} --input '{{"subtopic": "demo", "waitSeconds": 1}}'
"""


def local_listeners(args: argparse.Namespace, daemon_host: str) -> list[Listener]:
    """What ``notifier local`` is to listen on, as its options say."""
    return [
        Listener("AWS endpoint", "--aws-port", args.host, args.aws_port),
        Listener("MQTT broker", "--mqtt-port", args.host, args.mqtt_port),
        Listener("MQTT broker", "--mqtt-tls-port", args.host, args.mqtt_tls_port),
        Listener("MQTT broker", "--mqtt-wss-port", args.host, args.mqtt_wss_port),
        Listener("token issuer", "--issuer-port", args.host, args.issuer_port),
        Listener("daemon HTTP", "--http-port", daemon_host, args.http_port),
    ]


async def run_local(args: argparse.Namespace) -> int:
    # Every port given is free before anything starts: the stack takes seconds to start.
    daemon_host = load_settings(LOCAL_CONFIG, os.environ).http.host
    check_free(local_listeners(args, daemon_host))
    from notifier.local.stack import LocalStack

    defaults = LocalStackSettings()
    try:
        quota_settings = quotas.from_arguments(args)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    settings = LocalStackSettings(
        host=args.host,
        aws_port=args.aws_port,
        mqtt_port=args.mqtt_port,
        mqtt_tls_port=args.mqtt_tls_port,
        mqtt_wss_port=args.mqtt_wss_port,
        issuer_port=args.issuer_port,
        work_dir=args.work_dir or LOCAL_WORK_ROOT / defaults.stack_name,
        topic_root=args.topic_root,
        log_level=args.log_level,
        quotas=quota_settings,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with LocalStack(settings) as stack:

        def daemon_settings() -> Settings:
            settings = local_settings(stack, env=os.environ)
            http = dataclasses.replace(settings.http, port=args.http_port)
            return dataclasses.replace(settings, http=http)

        status = await serve(
            daemon_settings(),
            stop=stop,
            reload_settings=daemon_settings,
            on_ready=lambda daemon: print(banner(stack, daemon), flush=True),
            port_hint="--http-port",
        )
        print("stopping...", flush=True)
    return status


async def run_deploy(args: argparse.Namespace) -> int:
    parameters = {"Stage": args.stage, "TopicRoot": args.topic_root}
    for item in args.parameter:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DeployError(f"--parameter {item!r}: expected KEY=VALUE")
        parameters[key] = value
    aws = AwsClients(
        AwsSettings(region=args.region, endpoint_url=args.endpoint_url, profile=args.profile)
    )
    bucket = args.artifacts_bucket or await default_artifacts_bucket(aws, args.stack)
    outputs = await deploy_stack(aws, args.stack, parameters, artifacts_bucket=bucket)
    if args.json:
        print(json.dumps(outputs, indent=2, sort_keys=True))
    else:
        print(f"stack {args.stack} is deployed; outputs:")
        for key, value in sorted(outputs.items()):
            print(f"  {key:<28} {value}")
    return 0


def run_apikey(args: argparse.Namespace) -> int:
    key = new_key()
    print(f"API key (give it to {args.name}; it is not stored anywhere):\n  {key}\n")
    print("Add to the daemon's configuration:\n")
    print(f"[api_keys.{args.name}]")
    print(f'sha256 = "{hash_key(key)}"')
    print(f"rate = {args.rate:g}")
    print(f"burst = {args.burst}")
    return 0


async def run_cleanup(args: argparse.Namespace) -> int:
    settings = load_settings(config_path(args.config, os.environ), os.environ)
    prefix = settings.sqs.queue_prefix
    if prefix is None:
        raise ConfigError("[sqs] queue_prefix is not set: there are no completion queues")
    async with AwsClients(settings.aws).client("sqs") as sqs:
        deleted, kept = await cleanup.delete_silent_queues(
            sqs, prefix, args.silent_for, dry_run=args.dry_run
        )
    verb = "would delete" if args.dry_run else "deleted"
    for queue in deleted:
        assert queue.last_seen is not None  # only queues last seen long ago are deleted
        print(f"{verb} {queue.name} (last seen {queue.last_seen:%Y-%m-%d %H:%M} UTC)")
    untagged = sum(queue.last_seen is None for queue in kept)
    print(f"{len(deleted)} {verb}, {len(kept)} kept ({untagged} without a last-seen tag)")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    path = config_path(args.config, os.environ)
    settings = load_settings(path, os.environ)
    set_level(settings.daemon.log_level)
    if args.workers > 1:
        return asyncio.run(supervise(settings, args.workers, config=path))
    return asyncio.run(serve(settings, reload_settings=lambda: load_settings(path, os.environ)))


def missing_local_extra() -> str | None:
    """The first module of the local extra that is not installed, if any."""
    for module in LOCAL_EXTRA_MODULES:
        if importlib.util.find_spec(module) is None:
            return module
    return None


REPORTED_ERRORS = (DeployError, BotoCoreError, ClientError, PortInUseError, CannotListenError)
"""The errors any command reports as one line (no traceback)."""


def local_stack_errors(command: str) -> tuple[type[Exception], ...]:
    """The errors of the local stack ``command`` reports as one line too; imported only when
    one is to be reported, since they need the local extra."""
    if command not in LOCAL_COMMANDS:
        return ()
    from notifier.bench.daemon_process import DaemonProcessError
    from notifier.bench.load import LoadError
    from notifier.bench.profile import ProfileError
    from notifier.local.stack import LocalStackError

    return (LocalStackError, bench.BenchError, LoadError, DaemonProcessError, ProfileError)


def exit_reporting(exc: Exception, status: int) -> NoReturn:
    print(f"notifier: {exc}", file=sys.stderr)
    sys.exit(status)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging(getattr(args, "log_level", "INFO"))
    if args.command in LOCAL_COMMANDS and (missing := missing_local_extra()) is not None:
        print(
            f"notifier {args.command}: needs the local stack, not installed ({missing} is "
            f"missing): {LOCAL_EXTRA}",
            file=sys.stderr,
        )
        sys.exit(2)
    try:
        if args.command == "local":
            sys.exit(asyncio.run(run_local(args)))
        if args.command == "serve":
            sys.exit(run_serve(args))
        if args.command == "token":
            sys.exit(asyncio.run(token_cli.run(args)))
        if args.command == "apikey":
            sys.exit(run_apikey(args))
        if args.command == "deploy":
            sys.exit(asyncio.run(run_deploy(args)))
        if args.command == "bench":
            sys.exit(asyncio.run(bench.run(args)))
        if args.command == "cleanup":
            sys.exit(asyncio.run(run_cleanup(args)))
    except ConfigError as exc:
        exit_reporting(exc, EX_CONFIG)
    except REPORTED_ERRORS as exc:
        exit_reporting(exc, 2)
    except local_stack_errors(args.command) as exc:
        exit_reporting(exc, 2)
