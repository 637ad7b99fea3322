"""The aiohttp application: routes, request holding and answers.

``POST /<route>`` starts a transaction and holds the request until its completion arrives
or the hold time ends (202 + Location). ``GET /executions/<txnId>`` re-attaches to any
transaction; ``POST /executions/<txnId>/stop`` stops it. The AWS clients and completion
sources live in the application's ``cleanup_ctx``: they exist exactly while it runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from notifier import answers, openapi
from notifier.apikeys import HEADER as API_KEY_HEADER
from notifier.apikeys import ApiKey, ApiKeys
from notifier.aws import AwsClients, AwsSettings
from notifier.config import TOKEN_TRANSPORTS, Settings
from notifier.executions import AwsError, Executions, completion_from_description
from notifier.ids import is_txn_id, new_txn_id
from notifier.iot_tokens import IotToken, TokenIssuer
from notifier.logs import bind_transaction
from notifier.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from notifier.metrics import Metrics
from notifier.sources.describe import DescribePoller
from notifier.sources.mqtt import MqttSource, TokenSource
from notifier.sources.reconcile import Reconciler
from notifier.sources.sqs import SqsSource
from notifier.waiters import (
    Completion,
    Registry,
    RegistryFullError,
    Status,
    Transaction,
    utcnow,
)

log = logging.getLogger(__name__)


@dataclass
class LiveSettings:
    """The settings in force; replaced as a whole when the configuration is reloaded."""

    current: Settings


@dataclass
class AwsReachability:
    """The last answer of the readiness check against AWS, reused for a while."""

    error: str | None = None
    checked_at: float = -math.inf


AWS_CHECK_SECONDS = 30.0


@dataclass
class Admission:
    """Whether new requests are taken; cleared when the daemon starts draining."""

    accepting: bool = True


SETTINGS = web.AppKey("settings", LiveSettings)
AWS_SETTINGS = web.AppKey("aws_settings", AwsSettings)
INSTANCE_ID = web.AppKey("instance_id", str)
REGISTRY = web.AppKey("registry", Registry)
ADMISSION = web.AppKey("admission", Admission)
EXECUTIONS = web.AppKey("executions", Executions)
MQTT = web.AppKey("mqtt", MqttSource)
"""Absent in ``poll`` completion mode."""
SQS = web.AppKey("sqs", SqsSource)
"""Absent without ``[sqs] queue_prefix``."""
POLLER = web.AppKey("poller", DescribePoller)
RECONCILER = web.AppKey("reconciler", Reconciler)
METRICS = web.AppKey("metrics", Metrics)
API_KEYS = web.AppKey("api_keys", ApiKeys)
AWS_REACHABILITY = web.AppKey("aws_reachability", AwsReachability)

_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d+(?:\.\d+)?)\"?", re.IGNORECASE)


def create_app(settings: Settings, aws: AwsSettings, instance_id: str) -> web.Application:
    app = web.Application(middlewares=[json_errors])
    app[SETTINGS] = LiveSettings(settings)
    app[AWS_SETTINGS] = aws
    app[INSTANCE_ID] = instance_id
    metrics = app[METRICS] = Metrics()

    def count_completion(txn: Transaction, completion: Completion) -> None:
        metrics.observe_completion(completion.via, completion.stop_date, completion.notified_at)

    registry = app[REGISTRY] = Registry(
        settings.http.max_held, settings.daemon.recent_completions, on_resolved=count_completion
    )
    metrics.held_requests.set_function(lambda: registry.held)
    app[ADMISSION] = Admission()
    app[API_KEYS] = api_keys_from(settings)
    app[AWS_REACHABILITY] = AwsReachability()
    app.cleanup_ctx.extend([aws_context, sources_context])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/openapi.json", openapi_document)
    app.router.add_get("/executions/{txn_id}", reattach)
    app.router.add_post("/executions/{txn_id}/stop", stop)
    app.router.add_post("/{route}", start)
    return app


def api_keys_from(settings: Settings) -> ApiKeys:
    return ApiKeys(
        {
            name: ApiKey(name, key.sha256, key.rate, key.burst)
            for name, key in settings.api_keys.items()
        }
    )


# What a reload cannot change: connections and identities made at start.
RESTART_ONLY = ("mqtt", "iotauth", "sqs", "aws", "s3", "dashboard")


def reload(app: web.Application, new: Settings) -> list[str]:
    """Put ``new`` in force for routes, limits and API keys; held requests are untouched.

    Returns what changed but needs a restart to take effect (listening address, MQTT, AWS,
    bucket, instance id), which keeps its old value.
    """
    old = app[SETTINGS].current
    ignored = [name for name in RESTART_ONLY if getattr(old, name) != getattr(new, name)]
    if (old.http.host, old.http.port) != (new.http.host, new.http.port):
        ignored.append("http.host/port")
    for key in ("instance_id", "completion", "poll_interval", "reconcile_rate"):
        if getattr(old.daemon, key) != getattr(new.daemon, key):
            ignored.append(f"daemon.{key}")
    kept = dataclasses.replace(
        new,
        http=dataclasses.replace(new.http, host=old.http.host, port=old.http.port),
        daemon=dataclasses.replace(
            new.daemon,
            instance_id=old.daemon.instance_id,
            completion=old.daemon.completion,
            poll_interval=old.daemon.poll_interval,
            reconcile_rate=old.daemon.reconcile_rate,
        ),
        **{name: getattr(old, name) for name in RESTART_ONLY},
    )
    app[SETTINGS].current = kept
    app[REGISTRY].max_held = kept.http.max_held
    app[API_KEYS].replace(api_keys_from(kept))
    app[EXECUTIONS].routes = dict(kept.routes)
    return ignored


def aws_clients(app: web.Application) -> AwsClients:
    """Clients whose every call is counted in the metrics."""
    aws_calls = app[METRICS].aws_calls
    return AwsClients(app[AWS_SETTINGS], on_call=lambda name: aws_calls.labels(name).inc())


async def aws_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS].current
    clients = aws_clients(app)
    async with AsyncExitStack() as stack:
        s3 = await stack.enter_async_context(clients.client("s3"))
        sfn = await stack.enter_async_context(clients.client("stepfunctions"))
        app[EXECUTIONS] = Executions(
            s3, sfn, settings.s3.bucket, app[INSTANCE_ID], dict(settings.routes)
        )
        yield


async def sources_context(app: web.Application) -> AsyncIterator[None]:
    """MQTT (unless polling), this instance's queue (when configured), DescribeExecution
    sweeps of held requests, and polling of re-attached executions of other instances."""
    settings = app[SETTINGS].current
    daemon = settings.daemon
    async with AsyncExitStack() as stack:
        mqtt = None
        if daemon.completion == "mqtt":
            mqtt = app[MQTT] = await stack.enter_async_context(await mqtt_source(app))
            app[METRICS].watch_mqtt(mqtt)
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
            app[EXECUTIONS],
            mqtt,
            interval=daemon.poll_interval if mqtt is None else RECONCILE_MIN_INTERVAL,
            max_interval=RECONCILE_MAX_INTERVAL,
            rate=daemon.reconcile_rate,
        )
        app[RECONCILER] = await stack.enter_async_context(reconciler)
        if mqtt is not None:  # in poll mode the reconciler polls those too
            poller = DescribePoller(app[REGISTRY], app[EXECUTIONS], daemon.poll_interval)
            app[POLLER] = await stack.enter_async_context(poller)
        yield


# The reconciler's interval while MQTT is down: from the first, doubling while sweeps find
# nothing new, up to the second.
RECONCILE_MIN_INTERVAL = 1.0
RECONCILE_MAX_INTERVAL = 10.0


async def mqtt_source(app: web.Application) -> MqttSource:
    settings = app[SETTINGS].current
    instance_id = app[INSTANCE_ID]
    endpoint, tokens = await mqtt_access(app, lambda issuer: issuer.daemon_token(instance_id))
    return MqttSource(
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


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error answer is JSON with a message, including aiohttp's own (404, 405, 413)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        message = exc.reason
        if exc.status == 413:
            message = f"body larger than {request.app[SETTINGS].current.http.max_body_bytes} bytes"
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return answers.error(exc.status, message, headers=headers)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return answers.error(500, "internal error")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    reachability = app[AWS_REACHABILITY]
    now = time.monotonic()
    if now - reachability.checked_at > AWS_CHECK_SECONDS:
        reachability.error = await app[EXECUTIONS].check_reachable()
        reachability.checked_at = now
    mqtt, sqs = app.get(MQTT), app.get(SQS)
    ready = app[ADMISSION].accepting and reachability.error is None
    # Without MQTT, completions still come from the queue and DescribeExecution sweeps:
    # slower, but every request is answered, so a load balancer should keep sending.
    degraded = (mqtt is not None and not mqtt.connected) or (sqs is not None and not sqs.healthy)
    body = {
        "ready": ready,
        "state": "not ready" if not ready else "degraded" if degraded else "ready",
        "instanceId": app[INSTANCE_ID],
        "completion": app[SETTINGS].current.daemon.completion,
        "accepting": app[ADMISSION].accepting,
        "awsReachable": reachability.error is None,
        "awsError": reachability.error,
        "mqttTransport": mqtt.settings.transport if mqtt is not None else None,
        "mqttConnected": mqtt.connected if mqtt is not None else None,
        "mqttAuthError": mqtt.auth_error if mqtt is not None else None,
        "mqttTokenRefreshes": mqtt.refreshes if mqtt is not None else None,
        "sqsQueue": sqs.queue_url if sqs is not None else None,
        "sqsError": sqs.error if sqs is not None else None,
        "held": app[REGISTRY].held,
    }
    return web.json_response(body, status=200 if ready else 503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    return web.Response(body=metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE})


async def openapi_document(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS].current
    document = openapi.document(
        settings.routes, settings.http.require_api_key, settings.dashboard.enabled
    )
    return web.json_response(document)


async def start(request: web.Request) -> web.StreamResponse:
    """``POST /<route>``: store the body, start the execution, hold the request."""
    received_at = utcnow()
    app = request.app
    settings = app[SETTINGS].current
    registry = app[REGISTRY]
    executions = app[EXECUTIONS]
    route = request.match_info["route"]
    if route not in settings.routes:
        return answers.error(404, f"no route {route!r}")
    if (refusal := refuse_without_api_key(request)) is not None:
        return refusal
    if (refusal := _refuse_if_busy(app)) is not None:
        return refusal
    body = await read_json_object(request, settings.http.max_body_bytes)
    if isinstance(body, web.Response):
        return body
    wait, preference = _preferred_wait(request, settings)
    if (refusal := _refuse_if_busy(app)) is not None:  # again: the body took a while
        return refusal
    txn_id = new_txn_id()
    txn = registry.track(Transaction(txn_id, route, executions.execution_arn(route, txn_id)))
    bind_transaction(txn_id, txn.execution_arn)
    # Held before StartExecution: a fast workflow may complete before it returns.
    async with registry.hold(txn_id) as waiter:
        try:
            txn.started_at = await executions.start(route, txn_id, body)
        except AwsError as exc:
            registry.discard(txn_id)
            log.warning("POST /%s: %s", route, exc)
            return answers.aws_error(exc, settings.http.retry_after)
        return await _answer(request, txn, waiter, wait, received_at, preference)


async def reattach(request: web.Request) -> web.StreamResponse:
    """``GET /executions/<txnId>?wait=N``: the final answer, or 202 after N seconds."""
    received_at = utcnow()
    app = request.app
    settings = app[SETTINGS].current
    registry = app[REGISTRY]
    txn_id = request.match_info["txn_id"]
    bind_transaction(txn_id)
    if not is_txn_id(txn_id):
        return answers.error(404, f"no transaction {txn_id!r}")
    wait = settings.http.default_wait
    if "wait" in request.query:
        try:
            wait = float(request.query["wait"])
        except ValueError:
            wait = math.nan
        if not math.isfinite(wait) or wait < 0:
            return answers.error(400, "wait must be a non-negative number of seconds")
        wait = min(wait, settings.http.max_wait)
    if (refusal := _refuse_if_busy(app)) is not None:
        return refusal
    if registry.get(txn_id) is None:
        try:
            located = await app[EXECUTIONS].locate(txn_id)
        except AwsError as exc:
            return answers.aws_error(exc, settings.http.retry_after)
        if located is None:
            return answers.error(404, f"no transaction {txn_id!r}")
        route, description = located
        txn = registry.track(
            Transaction(
                txn_id,
                route,
                description["executionArn"],
                poll=_published_elsewhere(description, app[INSTANCE_ID]),
            )
        )
        if Status(description["status"]).final:
            registry.resolve(txn_id, completion_from_description(description))
    txn = registry.get(txn_id)
    if txn is None:  # evicted while DescribeExecution ran; only with a tiny recent_completions
        return answers.error(503, "too busy; retry", {"Retry-After": "1"})
    if (refusal := _refuse_if_busy(app)) is not None:  # again: DescribeExecution took a while
        return refusal
    async with registry.hold(txn_id) as waiter:
        return await _answer(request, txn, waiter, wait, received_at, None)


async def stop(request: web.Request) -> web.StreamResponse:
    """``POST /executions/<txnId>/stop``: StopExecution; requests holding it get 409."""
    app = request.app
    settings = app[SETTINGS].current
    registry = app[REGISTRY]
    txn_id = request.match_info["txn_id"]
    bind_transaction(txn_id)
    if (refusal := refuse_without_api_key(request)) is not None:
        return refusal
    if not is_txn_id(txn_id):
        return answers.error(404, f"no transaction {txn_id!r}")
    txn = registry.get(txn_id)
    try:
        if txn is not None:
            arn, ended = txn.execution_arn, txn.completion.status if txn.completion else None
        else:
            located = await app[EXECUTIONS].locate(txn_id)
            if located is None:
                return answers.error(404, f"no transaction {txn_id!r}")
            arn, status = located[1]["executionArn"], Status(located[1]["status"])
            ended = status if status.final else None
        if ended is not None:
            return answers.error(
                409, f"execution already ended: {ended}", transactionId=txn_id, status=str(ended)
            )
        await app[EXECUTIONS].stop(arn)
    except AwsError as exc:
        if exc.code == "ExecutionDoesNotExist":
            return answers.error(404, f"no execution for transaction {txn_id!r}")
        return answers.aws_error(exc, settings.http.retry_after)
    registry.resolve(txn_id, Completion(Status.ABORTED, via="stop", execution_arn=arn))
    return web.json_response(
        {
            "transactionId": txn_id,
            "executionArn": arn,
            "status": str(Status.ABORTED),
            "message": "execution stopped",
        }
    )


def refuse_without_api_key(request: web.Request) -> web.Response | None:
    """401 or 429 unless the request carries a valid API key (when keys are required)."""
    if not request.app[SETTINGS].current.http.require_api_key:
        return None
    verdict = request.app[API_KEYS].check(request.headers.get(API_KEY_HEADER))
    if verdict.status == 401:
        return answers.error(401, f"a valid API key is required in the {API_KEY_HEADER} header")
    if verdict.status == 429:
        return answers.error(
            429,
            f"API key {verdict.key_name!r} is over its rate limit",
            {"Retry-After": str(verdict.retry_after)},
        )
    return None


def _refuse_if_busy(app: web.Application) -> web.Response | None:
    retry_after = {"Retry-After": str(app[SETTINGS].current.http.retry_after)}
    if not app[ADMISSION].accepting:
        return answers.error(503, "shutting down", retry_after)
    try:
        app[REGISTRY].check_capacity()
    except RegistryFullError as exc:
        return answers.error(503, f"too many held requests ({exc}); retry later", retry_after)
    return None


async def read_json_object(request: web.Request, limit: int) -> dict[str, Any] | web.Response:
    """The request's JSON object body, or the 400/413 answer saying what is wrong with it."""
    if request.content_length is not None and request.content_length > limit:
        return answers.error(413, f"body larger than {limit} bytes")
    chunks, size = [], 0
    # Read here rather than by aiohttp, whose own limit is fixed when the app is made.
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            return answers.error(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return answers.error(400, f"body is not JSON: {exc}")
    if not isinstance(body, dict):
        return answers.error(400, "body must be a JSON object")
    return body


def _preferred_wait(request: web.Request, settings: Settings) -> tuple[float, str | None]:
    """Hold time from ``Prefer: wait=N`` (RFC 7240), capped; unparsable preferences are ignored."""
    for header in request.headers.getall("Prefer", []):
        match = _PREFER_WAIT.search(header)
        if match:
            wait = min(float(match.group(1)), settings.http.max_wait)
            return wait, f"wait={wait:g}"
    return settings.http.default_wait, None


def _published_elsewhere(description: dict[str, Any], instance_id: str) -> bool:
    try:
        subtopic = json.loads(description.get("input") or "{}").get("subtopic")
    except (json.JSONDecodeError, AttributeError):
        return True
    return bool(subtopic != instance_id)


async def _answer(
    request: web.Request,
    txn: Transaction,
    waiter: asyncio.Future[Completion | None],
    wait: float,
    received_at: datetime,
    preference: str | None,
) -> web.Response:
    app = request.app
    settings = app[SETTINGS].current
    headers = {"Preference-Applied": preference} if preference else None
    if not waiter.done():
        await asyncio.wait({waiter}, timeout=wait)
    completion = waiter.result() if waiter.done() else None
    status = str(completion.status) if completion is not None else "RUNNING"
    app[METRICS].requests.labels(route=txn.route, status=status).inc()
    bind_transaction(txn.txn_id, txn.execution_arn)
    via = completion.via if completion is not None else "-"
    log.info("%s %s: %s via %s", request.method, request.path, status, via)
    if completion is None:
        return answers.running(
            txn, received_at=received_at, retry_after=settings.http.retry_after, headers=headers
        )
    sidecar = settings.routes[txn.route].input == "sidecar"
    process_data: Any = None
    process_data_error = None
    if sidecar:
        try:
            process_data = await app[EXECUTIONS].read_process_data(txn.txn_id)
        except (AwsError, ValueError) as exc:
            process_data_error = str(exc)
    return answers.final(
        txn,
        completion,
        received_at=received_at,
        process_data=process_data,
        process_data_error=process_data_error,
        sidecar=sidecar,
        headers=headers,
    )
