"""The operating endpoints: liveness, readiness (details with an API key, when keys are
required), Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

import time

from aiohttp import web

from notifier.app import openapi
from notifier.app.routing import ROUTES
from notifier.app.state import (
    ADMISSION,
    AUTHORIZED,
    AWS_REACHABILITY,
    EXECUTIONS,
    INSTANCE_ID,
    LIVENESS,
    METRICS,
    MQTT_POOL,
    REGISTRY,
    SETTINGS,
    SQS,
)
from notifier.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

AWS_CHECK_SECONDS = 30.0


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    reachability = app[AWS_REACHABILITY]
    now = time.monotonic()
    if now - reachability.checked_at > AWS_CHECK_SECONDS:
        reachability.error = await app[EXECUTIONS].process_data.check_reachable()
        reachability.checked_at = now
    mqtt, sqs, liveness = app.get(MQTT_POOL), app.get(SQS), app.get(LIVENESS)
    mqtt_problem = liveness.problem if liveness is not None else None
    ready = app[ADMISSION].accepting and reachability.error is None
    # Without MQTT, completions still come from the queue and DescribeExecution sweeps:
    # slower, but every request is answered, so a load balancer should keep sending.
    degraded = (
        (mqtt is not None and not mqtt.connected)
        or mqtt_problem is not None
        or (sqs is not None and not sqs.healthy)
    )
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
        "mqttConnections": len(mqtt.connections) if mqtt is not None else None,
        "mqttConnectionsMax": mqtt.max_connections if mqtt is not None else None,
        "mqttConnectionDetails": list(mqtt.describe()) if mqtt is not None else None,
        "mqttProblem": mqtt_problem,
        "mqttMissed": liveness.missed if liveness is not None else None,
        "sqsQueue": sqs.queue_url if sqs is not None else None,
        "sqsError": sqs.error if sqs is not None else None,
        "held": app[REGISTRY].held,
    }
    if not request.get(AUTHORIZED, False):
        # What a load balancer needs, and no more: no AWS error text, no queue URL.
        body = {name: body[name] for name in PUBLIC_READINESS}
    return web.json_response(body, status=200 if ready else 503)


PUBLIC_READINESS = ("ready", "state")


async def metrics_endpoint(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    return web.Response(body=metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE})


async def openapi_document(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS].current
    routes = request.app[ROUTES]
    document = openapi.document(routes, settings.routes, settings.http.require_api_key)
    return web.json_response(document)
