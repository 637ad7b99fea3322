"""How the application is made: its state, middlewares and routes, and, in its
``cleanup_ctx``, the AWS clients and completion sources, which exist exactly while it runs."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack

from aiohttp import web

from notifier.app.middlewares import (
    add_security_headers,
    authentication,
    json_bodies,
    json_errors,
    same_origin,
    traced,
)
from notifier.app.routing import Route, add_routes, declare_access
from notifier.app.state import (
    ADMISSION,
    API_KEYS,
    AWS_CLIENTS,
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
    SYNC_RUNS,
    TRACING,
    Admission,
    AwsReachability,
    LiveSettings,
    api_keys_from,
)
from notifier.aws.clients import AwsClients
from notifier.aws.fast_operations import PutObject, StartExecution
from notifier.aws.iot_tokens import IotToken, TokenIssuer
from notifier.aws.read_budget import ReadBudget
from notifier.aws.sfn_calls import StartPacer
from notifier.config import TOKEN_TRANSPORTS, AwsSettings, Settings
from notifier.metrics import Metrics
from notifier.requests.executions import Executions
from notifier.requests.waiters import Completion, Registry, Rejection, Transaction
from notifier.sources.describe import DescribePoller, Describer
from notifier.sources.liveness import MqttLiveness, published_to
from notifier.sources.mqtt import TokenSource
from notifier.sources.mqtt.pool import MqttPool
from notifier.sources.pointers import OutputFetcher
from notifier.sources.queue import SqsSource
from notifier.sources.safety_net_while_up import SafetyNet
from notifier.sources.sweeps_while_down import Reconciler
from notifier.sources.sync import SyncRuns
from notifier.tracing import Tracing


def create_app(
    settings: Settings,
    aws: AwsSettings,
    instance_id: str,
    routes: Iterable[Route],
    tracing: Tracing | None = None,
) -> web.Application:
    """The daemon's application serving ``routes``, with its AWS clients and sources;
    ``tracing`` defaults to what ``settings.tracing`` says."""
    app = http_app(
        settings, instance_id, routes, tracing or Tracing.from_settings(settings.tracing)
    )
    app[AWS_SETTINGS] = aws
    app[AWS_CLIENTS] = AwsClients(aws, on_call=app[METRICS].count_aws_call)
    app.cleanup_ctx.extend([tracing_context, aws_context, sources_context])
    return app


def http_app(
    settings: Settings,
    instance_id: str,
    routes: Iterable[Route],
    tracing: Tracing | None = None,
) -> web.Application:
    """The application serving ``routes`` with its state, but without AWS clients or
    completion sources: whoever runs it alone puts an
    :class:`~notifier.requests.executions.Executions` in ``EXECUTIONS``."""
    tracing = tracing or Tracing()
    middlewares = [json_errors, same_origin, authentication, json_bodies]
    app = web.Application(middlewares=[traced, *middlewares] if tracing.enabled else middlewares)
    app.on_response_prepare.append(add_security_headers)
    app[TRACING] = tracing
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
    for reason in Rejection:
        metrics.completions_rejected.labels(reason)
    metrics.held_requests.set_function(lambda: registry.held)
    metrics.held_reattached_requests.set_function(lambda: registry.held_reattached)
    metrics.held_requests_limit.labels(kind="start").set_function(lambda: registry.max_held)
    metrics.held_requests_limit.labels(kind="reattach").set_function(
        lambda: registry.max_reattach_held
    )
    app[ADMISSION] = Admission()
    app[SYNC_RUNS] = SyncRuns(registry)
    app.cleanup_ctx.append(sync_runs_context)
    app[API_KEYS] = api_keys_from(settings)
    app[AWS_REACHABILITY] = AwsReachability()
    declare_access(app)
    add_routes(app, routes)
    return app


async def sync_runs_context(app: web.Application) -> AsyncIterator[None]:
    """The Express workflows' calls still running when the application stops are cancelled."""
    async with app[SYNC_RUNS]:
        yield


# What a reload cannot change: connections and identities made at start.
RESTART_ONLY = ("mqtt", "iotauth", "sqs", "aws", "s3", "dashboard", "tracing")
RESTART_ONLY_DAEMON_KEYS = (
    "instance_id",
    "completion",
    "poll_interval",
    "sfn_read_rate",
    "sfn_start_rate",
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


async def tracing_context(app: web.Application) -> AsyncIterator[None]:
    """Spans still batched are sent on the way out."""
    yield
    app[TRACING].shutdown()


async def aws_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS].current
    clients = app[AWS_CLIENTS]
    live = app[SETTINGS]
    async with AsyncExitStack() as stack:
        s3 = await stack.enter_async_context(clients.client("s3"))
        sfn = await stack.enter_async_context(clients.client("stepfunctions"))
        put_object = await stack.enter_async_context(clients.fast(s3, PutObject))
        start_execution = await stack.enter_async_context(clients.fast(sfn, StartExecution))
        sync_sfn = await stack.enter_async_context(clients.client("stepfunctions", sync=True))
        app[METRICS].watch_fast_calls(put_object, start_execution)
        app[EXECUTIONS] = Executions(
            s3,
            sfn,
            settings.s3.bucket,
            app[INSTANCE_ID],
            lambda: live.current.routes,
            # The one budget of every Step Functions read, the sources' included.
            budget=ReadBudget(settings.daemon.sfn_read_rate),
            starts=StartPacer(settings.daemon.sfn_start_rate),
            on_throttled=lambda api: app[METRICS].sfn_throttled.labels(api=api).inc(),
            put_object=put_object,
            start_execution=start_execution,
            start_sync_execution=sync_sfn.start_sync_execution,
            tracing=app[TRACING],
        )
        app[METRICS].watch_step_functions(app[EXECUTIONS])
        yield


async def sources_context(app: web.Application) -> AsyncIterator[None]:
    """MQTT (unless polling) and the check that it delivers, this instance's queue (when
    configured), the fetch of outputs too large for them, DescribeExecution sweeps of held
    requests and the safety net, all drawing on the one read budget, and polling of
    re-attached executions of other instances."""
    settings = app[SETTINGS].current
    daemon = settings.daemon
    describer = Describer(app[REGISTRY], app[EXECUTIONS])
    async with AsyncExitStack() as stack:
        fetcher = OutputFetcher(app[REGISTRY], describer)
        app[OUTPUT_FETCHER] = await stack.enter_async_context(fetcher)
        mqtt = None
        if daemon.completion == "mqtt":
            mqtt = app[MQTT_POOL] = await stack.enter_async_context(await mqtt_pool(app))
            app[MQTT] = mqtt.primary
            app[EXECUTIONS].subtopic_for = mqtt.reserve
            app[METRICS].watch_mqtt(mqtt)
            liveness = MqttLiveness(
                app[REGISTRY],
                mqtt.primary,
                published_to(app[EXECUTIONS], settings.mqtt.topic_root, mqtt.subtopic_of),
                connection_of=mqtt.connection_of,
                on_missed=app[METRICS].mqtt_missed.inc,
                on_undelivered=app[METRICS].mqtt_undelivered.inc,
            )
            app[LIVENESS] = await stack.enter_async_context(liveness)
        if settings.sqs.queue_prefix is not None:
            assert settings.sqs.dead_letter_queue_arn is not None
            sqs = SqsSource(
                await stack.enter_async_context(app[AWS_CLIENTS].client("sqs")),
                app[REGISTRY],
                f"{settings.sqs.queue_prefix}{app[INSTANCE_ID]}",
                settings.sqs.dead_letter_queue_arn,
                wait_seconds=settings.sqs.wait_seconds,
                on_dead_letters=app[METRICS].dead_letter_messages.labels(queue="status").set,
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
    endpoint = settings.mqtt.endpoint or await iot_data_endpoint(app[AWS_CLIENTS])
    if settings.mqtt.transport not in TOKEN_TRANSPORTS:
        return endpoint, None
    issuer = TokenIssuer(settings.iotauth, app[AWS_SETTINGS], settings.mqtt.connect_timeout)
    return endpoint, lambda: token(issuer)


async def iot_data_endpoint(aws: AwsClients) -> str:
    async with aws.client("iot") as iot:
        response = await iot.describe_endpoint(endpointType="iot:Data-ATS")
    return str(response["endpointAddress"])
