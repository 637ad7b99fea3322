"""Stands in for the template's token API (API Gateway, IAM-authenticated) on loopback.

Serves the same two routes, ``POST /tokens/daemon/{subtopic}`` and ``POST /tokens/dashboard``,
and hands each request to the deployed token issuer Lambda as the API Gateway proxy event
API Gateway would build. As API Gateway does for ``AuthorizationType: AWS_IAM``, it wants
every request signed with SigV4 (service ``execute-api``, the stack's region), here with the
local stack's credentials; unsigned or badly signed requests are answered 403.
"""

from __future__ import annotations

import json
import logging
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from aiohttp import web

from notifier.aws.clients import AwsClients
from notifier.lifecycle import Service
from notifier.local.ports import PortInUseError
from notifier.local.sigv4 import SignatureRefused, SigV4Verifier

if TYPE_CHECKING:
    from types_aiobotocore_lambda import LambdaClient

log = logging.getLogger("notifier.local.token_api")

ROUTES = ("/tokens/daemon/{subtopic}", "/tokens/dashboard")


class LocalTokenApi(Service):
    def __init__(
        self,
        host: str,
        port: int,
        signatures: SigV4Verifier,
        aws: AwsClients,
        function_arn: str,
        stage: str,
    ) -> None:
        self.host = host
        self.port = port
        self._signatures = signatures
        self._aws = aws
        self._function_arn = function_arn
        self._stage = stage
        self._exit = AsyncExitStack()
        self._lambda: LambdaClient  # from start on
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        for resource in ROUTES:
            app.router.add_route("*", resource, self._handle)
        app.router.add_route("*", "/{anything:.*}", self._no_such_resource)
        self._lambda = await self._exit.enter_async_context(self._aws.client("lambda"))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            await self._exit.aclose()
            raise PortInUseError("token issuer", self.host, self.port, "--issuer-port") from exc
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._exit.aclose()

    async def _no_such_resource(self, request: web.Request) -> web.Response:
        """API Gateway's answer to a path it has no resource for, signed or not."""
        return web.json_response({"message": "Missing Authentication Token"}, status=403)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            access_key = self._signatures.check(
                request.method, str(request.url), request.headers, body
            )
        except SignatureRefused as refused:
            log.info("token API request refused: %s", refused)
            return web.json_response({"message": str(refused)}, status=403)
        resource = request.match_info.route.resource
        event = {
            "resource": resource.canonical if resource is not None else request.path,
            "path": request.path,
            "httpMethod": request.method,
            "headers": dict(request.headers),
            "pathParameters": dict(request.match_info) or None,
            "queryStringParameters": dict(request.query) or None,
            "body": body.decode(errors="replace") or None,
            "isBase64Encoded": False,
            "requestContext": {
                "stage": self._stage,
                "httpMethod": request.method,
                "identity": {"sourceIp": request.remote, "accessKey": access_key, "userArn": None},
            },
        }
        response = await self._lambda.invoke(
            FunctionName=self._function_arn, Payload=json.dumps(event)
        )
        payload = json.loads(await response["Payload"].read())
        if response.get("FunctionError") or not isinstance(payload, dict):
            log.warning("token issuer failed: %s", payload)
            return web.json_response({"message": "Internal server error"}, status=502)
        return web.Response(
            status=int(payload.get("statusCode", 200)),
            headers=payload.get("headers") or {},
            text=payload.get("body") or "",
        )
