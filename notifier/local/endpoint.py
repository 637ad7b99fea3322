"""The local AWS API endpoint: moto's server plus the bridges for what moto lacks.

Runs as its own process (``python -m notifier.local.endpoint``) so that state machine
executions and Lambda workers never compete with the daemon's event loop. Once it listens it
prints one line, ``READY <host> <port>``, on stdout; SIGTERM stops it. The broker password
of the IoT data plane comes in the environment variable named by ``PUBLISHER_PASSWORD_ENV``;
the AWS quotas it enforces (Step Functions' throttling, the data plane's payload limit) in
``--quotas``, as :class:`~notifier.local.quotas.QuotaSettings` JSON.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import socket
import sys
import threading
import warnings
from typing import Any

from notifier.local.quotas import QuotaSettings
from notifier.local.settings import LOCAL_CREDENTIAL
from notifier.local.sigv4 import SigV4Verifier
from notifier.loopback import is_loopback

PUBLISHER_PASSWORD_ENV = "NOTIFIER_LOCAL_PUBLISHER_PASSWORD"  # nosec B105  # a variable name
# Template resources the local stack leaves out; cloudformation_resources says why.
SKIPPED_ON_PURPOSE = ("AWS::S3::BucketPolicy", "AWS::CloudWatch::Alarm")

LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": LOCAL_CREDENTIAL,
    "AWS_SECRET_ACCESS_KEY": LOCAL_CREDENTIAL,
    "AWS_DEFAULT_REGION": "us-east-1",
}


def serve(host: str, port: int, mqtt_host: str, mqtt_port: int, quotas: QuotaSettings) -> None:
    # Bound here rather than by werkzeug, which answers a taken port with its own exit, and
    # before moto is imported, which takes a second.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        print(f"ERROR cannot listen on {host}:{port}: {exc.strerror}", flush=True)
        sys.exit(2)
    listener.listen(512)
    # Out of the environment before any process is started from here (Lambda workers).
    publisher_password = os.environ.pop(PUBLISHER_PASSWORD_ENV, "")
    os.environ.update(LOCAL_CREDENTIALS)
    # The endpoint answers no browser (endpoint_guard); moto's own CORS would answer them all.
    os.environ["MOTO_DISABLE_GLOBAL_CORS"] = "true"
    from moto.core.config import default_user_config
    from moto.moto_server.werkzeug_app import MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    from notifier.lifecycle import announce_ready
    from notifier.local import (
        cloudformation_resources,
        conditional_writes,
        endpoint_quotas,
        eventbridge_targets,
        iot_authorizers,
        iot_core,
        lambda_calls,
        lambda_runtime,
        moto_performance,
        moto_threads,
        sfn_api,
        sfn_status_events,
        throttling,
    )
    from notifier.local.endpoint_guard import ClosedEndpoint

    quota_events = throttling.QuotaEvents()
    throttle = (
        throttling.StepFunctionsThrottle(quotas.sfn, quota_events) if quotas.enabled else None
    )
    server: Any = make_server(
        host,
        port,
        ClosedEndpoint(
            endpoint_quotas.QuotaMiddleware(
                moto_performance.dispatcher(create_backend_app), throttle, quota_events
            ),
            SigV4Verifier(LOCAL_CREDENTIAL, LOCAL_CREDENTIAL, region=None, service=None),
        ),
        threaded=True,
        request_handler=MotoRequestHandler,
        fd=listener.fileno(),
    )
    bound_host, bound_port = server.server_address[:2]
    # moto's Step Functions call the other services back on localhost:$MOTO_PORT.
    os.environ["MOTO_PORT"] = str(bound_port)
    default_user_config["stepfunctions"]["execute_state_machine"] = True
    # IoT's certificate ids: the SHA-256 of the DER certificate, not of moto's PEM text.
    default_user_config["iot"]["use_valid_cert"] = True

    runtime = lambda_runtime.LocalLambdaRuntime(
        f"http://{bound_host}:{bound_port}", lambda_calls.WsgiCaller(server)
    )
    emitter = sfn_status_events.StatusChangeEmitter()
    publisher = iot_core.BrokerPublisher(mqtt_host, mqtt_port, publisher_password)
    invocations = eventbridge_targets.AsyncInvocations()
    moto_performance.install()
    moto_threads.install()
    lambda_runtime.install(runtime)
    runtime.start()
    sfn_status_events.install(emitter)
    eventbridge_targets.install(invocations)
    iot_core.install(publisher, quotas.iot_payload if quotas.enabled else None, quota_events)
    cloudformation_resources.install()
    iot_authorizers.install()
    sfn_api.install()
    conditional_writes.install()  # after sfn_api: its StartExecution runs alone too

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # What start made (moto's modules and models, the botocore specs) lives as long as the
    # process: the collector's full passes need not walk it again and again. It was off
    # while it was made (main), where each of its full passes found next to nothing to free.
    gc.freeze()
    gc.enable()
    announce_ready(bound_host, bound_port)
    try:
        server.serve_forever()
    finally:
        emitter.close()
        invocations.close()
        runtime.close()
        publisher.close()
        # Nor need the interpreter's last full passes, at exit, walk all that the executions
        # made since (most of a second after a test run) only to free what exit frees.
        gc.freeze()


def loopback_address(host: str) -> str:
    if not is_loopback(host):
        raise argparse.ArgumentTypeError(f"{host!r} is not a loopback address")
    return host


def main() -> None:
    gc.disable()  # while the process starts: see serve
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", type=loopback_address, default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4566)
    parser.add_argument("--mqtt-host", default="127.0.0.1")
    parser.add_argument("--mqtt-port", type=int, default=1883)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument(
        "--quotas", default=QuotaSettings().to_json(), help="the quotas to enforce, as JSON"
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request is noise
        # Skipped on purpose (see cloudformation_resources): no need to say so at every deploy.
        for resource_type in SKIPPED_ON_PURPOSE:
            warnings.filterwarnings("ignore", message=f"Tried to parse {resource_type}")
        # The interpreter logs its internal evaluation traces as errors, including for Choice
        # rules on absent fields; what matters reaches the execution history as in AWS.
        logging.getLogger("moto.stepfunctions.parser.asl.component.eval_component").setLevel(
            logging.CRITICAL
        )
        logging.getLogger("moto").addFilter(
            lambda record: not any(t in record.getMessage() for t in SKIPPED_ON_PURPOSE)
        )
    serve(
        args.host, args.port, args.mqtt_host, args.mqtt_port, QuotaSettings.from_json(args.quotas)
    )


if __name__ == "__main__":
    main()
