"""How the application is made: its state, middlewares and routes, and, in its
``cleanup_ctx``, the AWS clients and completion sources, which exist exactly while it runs."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

from aiohttp import web

from notifier.app import handlers
from notifier.app.middlewares import (
    add_security_headers,
    authentication,
    json_bodies,
    json_errors,
    same_origin,
)
from notifier.app.routes import Access, Route, add_routes, declare_access
from notifier.app.state import (
    ADMISSION,
    API_KEYS,
    AWS_REACHABILITY,
    AWS_SETTINGS,
    EXECUTIONS,
    INSTANCE_ID,
    LIVENESS,
    METRICS,
    MQTT,
    MQTT_POOL,
    OUTPUT_FETCHER,
    POLLER,
    RECONCILER,
    REGISTRY,
    SAFETY_NET,
    SETTINGS,
    SQS,
    Admission,
    AwsReachability,
    LiveSettings,
    api_keys_from,
)
from notifier.aws import AwsClients, AwsSettings
from notifier.config import RESERVED_PATHS, ROUTE_NAME_PATTERN, TOKEN_TRANSPORTS, Settings
from notifier.executions import Executions
from notifier.fast_calls import PutObject, StartExecution
from notifier.iot_tokens import IotToken, TokenIssuer
from notifier.metrics import Metrics
from notifier.ratelimit import RateLimiter
from notifier.sources.describe import DescribePoller, Describer
from notifier.sources.liveness import MqttLiveness, published_to
from notifier.sources.mqtt import TokenSource
from notifier.sources.mqtt.pool import MqttPool
from notifier.sources.pointers import OutputFetcher
from notifier.sources.reconcile import Reconciler
from notifier.sources.safety import SafetyNet
from notifier.sources.sqs import SqsSource
from notifier.waiters import Completion, Registry, Transaction


def create_app(settings: Settings, aws: AwsSettings, instance_id: str) -> web.Application:
    """The daemon's application: the HTTP API, with its AWS clients and sources."""
    app = http_app(settings, instance_id)
    app[AWS_SETTINGS] = aws
    app.cleanup_ctx.extend([aws_context, sources_context])
    return app


def http_app(settings: Settings, instance_id: str) -> web.Application:
    """The HTTP API with its state, but without AWS clients or completion sources: whoever
    runs it alone puts an :class:`~notifier.executions.Executions` in ``EXECUTIONS``."""
    app = web.Application(middlewares=[json_errors, same_origin, authentication, json_bodies])
    app.on_response_prepare.append(add_security_headers)
    app[SETTINGS] = LiveSettings(settings)
    app[INSTANCE_ID] = instance_id
    metrics = app[METRICS] = Metrics()

    def count_completion(txn: Transaction, completion: Completion) -> None:
        metrics.observe_completion(completion.via, completion.stop_date, completion.notified_at)

    registry = app[REGISTRY] = Registry(
        settings.http.max_held,
        settings.daemon.recent_completions,
        on_resolved=count_completion,
        max_recent_bytes=settings.daemon.recent_completions_bytes,
        max_reattach_held=settings.http.max_reattach_held,
    )
    registry.on_rejected.append(
        lambda txn, completion, reason: metrics.completions_rejected.labels(reason).inc()
    )
    metrics.held_requests.set_function(lambda: registry.held)
    app[ADMISSION] = Admission()
    app[API_KEYS] = api_keys_from(settings)
    app[AWS_REACHABILITY] = AwsReachability()
    declare_access(app)
    add_routes(
        app,
        [
            Route("GET", "/healthz", handlers.healthz, Access.OPEN),
            Route("GET", "/readyz", handlers.readyz, Access.OPEN),
            Route("GET", "/metrics", handlers.metrics_endpoint, Access.ADMIN),
            Route("GET", "/openapi.json", handlers.openapi_document, Access.API_KEY),
            Route("GET", "/executions", handlers.list_executions, Access.API_KEY),
            Route("GET", "/executions/{txn_id}", handlers.reattach, Access.API_KEY),
            Route("POST", "/executions/{txn_id}/stop", handlers.stop, Access.API_KEY),
            Route("POST", ROUTE_PATH, handlers.start, Access.API_KEY),
            Route("GET", ROUTE_PATH, handlers.reattach_by_key, Access.API_KEY),
        ],
    )
    return app


# A route's path: any name a route may have, so never one of the daemon's own endpoints,
# whenever these are added.
ROUTE_PATH = "/{route:(?!(?:" + "|".join(sorted(RESERVED_PATHS)) + f")$){ROUTE_NAME_PATTERN}}}"


# What a reload cannot change: connections and identities made at start.
RESTART_ONLY = ("mqtt", "iotauth", "sqs", "aws", "s3", "dashboard")
RESTART_ONLY_DAEMON_KEYS = (
    "instance_id",
    "completion",
    "poll_interval",
    "reconcile_rate",
    "sweep_interval",
    "sweep_after",
)


def reload(app: web.Application, new: Settings) -> list[str]:
    """Put ``new`` in force for routes, limits and API keys; held requests are untouched.

    Returns what changed but needs a restart to take effect (listening address, MQTT, AWS,
    bucket, instance id), which keeps its old value.
    """
    old = app[SETTINGS].current
    ignored = [name for name in RESTART_ONLY if getattr(old, name) != getattr(new, name)]
    if (old.http.host, old.http.port) != (new.http.host, new.http.port):
        ignored.append("http.host/port")
    for key in RESTART_ONLY_DAEMON_KEYS:
        if getattr(old.daemon, key) != getattr(new.daemon, key):
            ignored.append(f"daemon.{key}")
    kept = dataclasses.replace(
        new,
        http=dataclasses.replace(new.http, host=old.http.host, port=old.http.port),
        daemon=dataclasses.replace(
            new.daemon, **{key: getattr(old.daemon, key) for key in RESTART_ONLY_DAEMON_KEYS}
        ),
        **{name: getattr(old, name) for name in RESTART_ONLY},
    )
    app[SETTINGS].current = kept
    app[REGISTRY].max_held = kept.http.max_held
    app[REGISTRY].max_reattach_held = kept.http.max_reattach_held
    app[API_KEYS].replace(api_keys_from(kept))
    return ignored


def aws_clients(app: web.Application) -> AwsClients:
    """Clients whose every call is counted in the metrics."""
    aws_calls = app[METRICS].aws_calls
    return AwsClients(app[AWS_SETTINGS], on_call=lambda name: aws_calls.labels(name).inc())


async def aws_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS].current
    clients = aws_clients(app)
    live = app[SETTINGS]
    async with AsyncExitStack() as stack:
        s3 = await stack.enter_async_context(clients.client("s3"))
        sfn = await stack.enter_async_context(clients.client("stepfunctions"))
        put_object = await stack.enter_async_context(clients.fast(s3, PutObject))
        start_execution = await stack.enter_async_context(clients.fast(sfn, StartExecution))
        app[METRICS].watch_fast_calls(put_object, start_execution)
        app[EXECUTIONS] = Executions(
            s3,
            sfn,
            settings.s3.bucket,
            app[INSTANCE_ID],
            lambda: live.current.routes,
            # The one rate limit of every DescribeExecution, the sources' included.
            limiter=RateLimiter(settings.daemon.reconcile_rate),
            put_object=put_object,
            start_execution=start_execution,
        )
        yield


async def sources_context(app: web.Application) -> AsyncIterator[None]:
    """MQTT (unless polling) and the check that it delivers, this instance's queue (when
    configured), the fetch of outputs too large for them, DescribeExecution sweeps of held
    requests and the safety net, all sharing one rate limit, and polling of re-attached
    executions of other instances."""
    settings = app[SETTINGS].current
    daemon = settings.daemon
    limiter = app[EXECUTIONS].limiter
    assert limiter is not None  # made with the executions
    describer = Describer(app[REGISTRY], app[EXECUTIONS], limiter)
    async with AsyncExitStack() as stack:
        fetcher = OutputFetcher(app[REGISTRY], describer)
        app[OUTPUT_FETCHER] = await stack.enter_async_context(fetcher)
        mqtt = None
        if daemon.completion == "mqtt":
            mqtt = app[MQTT_POOL] = await stack.enter_async_context(await mqtt_pool(app))
            app[MQTT] = mqtt.primary
            app[EXECUTIONS].subtopic_for = mqtt.assign
            app[METRICS].watch_mqtt(mqtt)
            liveness = MqttLiveness(
                app[REGISTRY],
                mqtt.primary,
                published_to(app[EXECUTIONS], settings.mqtt.topic_root, mqtt.subtopic_of),
                limiter,
                connection_of=mqtt.connection_of,
                on_missed=app[METRICS].mqtt_missed.inc,
            )
            app[LIVENESS] = await stack.enter_async_context(liveness)
        if settings.sqs.queue_prefix is not None:
            assert settings.sqs.dead_letter_queue_arn is not None
            sqs = SqsSource(
                await stack.enter_async_context(aws_clients(app).client("sqs")),
                app[REGISTRY],
                f"{settings.sqs.queue_prefix}{app[INSTANCE_ID]}",
                settings.sqs.dead_letter_queue_arn,
                wait_seconds=settings.sqs.wait_seconds,
            )
            app[SQS] = await stack.enter_async_context(sqs)
        reconciler = Reconciler(
            app[REGISTRY],
            describer,
            mqtt,
            interval=daemon.poll_interval if mqtt is None else RECONCILE_MIN_INTERVAL,
            max_interval=RECONCILE_MAX_INTERVAL,
            exposed=mqtt.exposed if mqtt is not None else None,
        )
        app[RECONCILER] = await stack.enter_async_context(reconciler)
        safety_net = SafetyNet(
            app[REGISTRY],
            describer,
            sweep_interval=daemon.sweep_interval,
            sweep_after=daemon.sweep_after,
            sweeping=mqtt is not None,  # in poll mode everything held is polled
        )
        app[SAFETY_NET] = await stack.enter_async_context(safety_net)
        if mqtt is not None:  # in poll mode the reconciler polls those too
            poller = DescribePoller(app[REGISTRY], describer, daemon.poll_interval)
            app[POLLER] = await stack.enter_async_context(poller)
        yield


# While MQTT is down, a held request is described again this often: from the first, backing
# off with the execution's age up to the second.
RECONCILE_MIN_INTERVAL = 1.0
RECONCILE_MAX_INTERVAL = 10.0


async def mqtt_pool(app: web.Application) -> MqttPool:
    """The completion connections; every one's token is a daemon token for the instance's
    subtopic, each naming its own client id."""
    settings = app[SETTINGS].current
    instance_id = app[INSTANCE_ID]
    endpoint, tokens = await mqtt_access(app, lambda issuer: issuer.daemon_token(instance_id))
    return MqttPool(
        settings.mqtt,
        instance_id=instance_id,
        registry=app[REGISTRY],
        endpoint=endpoint,
        aws=app[AWS_SETTINGS],
        tokens=tokens,
        refresh_margin=settings.iotauth.refresh_margin,
    )


async def mqtt_access(
    app: web.Application, token: Callable[[TokenIssuer], Awaitable[IotToken]]
) -> tuple[str, TokenSource | None]:
    """The broker's host, and where tokens come from (``token`` of the configured issuer)
    with the transports that use them."""
    settings = app[SETTINGS].current
    endpoint = settings.mqtt.endpoint or await iot_data_endpoint(app[AWS_SETTINGS])
    if settings.mqtt.transport not in TOKEN_TRANSPORTS:
        return endpoint, None
    issuer = TokenIssuer(settings.iotauth, app[AWS_SETTINGS], settings.mqtt.connect_timeout)
    return endpoint, lambda: token(issuer)


async def iot_data_endpoint(aws: AwsSettings) -> str:
    async with AwsClients(aws).client("iot") as iot:
        response = await iot.describe_endpoint(endpointType="iot:Data-ATS")
    return str(response["endpointAddress"])
