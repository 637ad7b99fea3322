"""The two AWS calls of every transaction, PutObject and StartExecution, made cheaply.

botocore spends about a millisecond of CPU on each call: event hooks, parameter validation,
endpoint rules, the user agent, signing adapters, response parsing. A :class:`FastCall` sends
the same request for a few tenths of that, and changes nothing about where it goes or how it
is authenticated:

- the endpoint and signing scope come from the client's own endpoint rules (region, FIPS,
  dual-stack, path or virtual-host style, a custom endpoint), resolved once per bucket;
- the credentials are the client's own, refreshed as the client refreshes them;
- SigV4 signs what botocore signs for that service (:mod:`notifier.aws.signing`);
- the request goes over a kept-alive connection of its own (:mod:`notifier.aws.http_connections`)
  made with the client's TLS settings, timeouts and pool size; through a proxy, it goes
  through the client's own HTTP session.

It only ever makes a first attempt that succeeds, or that is throttled: a throttling answer
is raised as the client would raise it (a ``ClientError``), for the caller to back off
from, since another attempt at once would only be throttled again and cost one more call
of the account's quota. A parameter it does not serialize itself, any other error answer
or a failed connection hands the call to the client, which then makes it
exactly as it always has: retries with backoff where the client has them (not for Step
Functions, whose calls the daemon retries itself), S3's region redirects, and the same
exceptions. After such a failure every call goes through the client until
:data:`CLIENT_ONLY_SECONDS` have passed without another, so that a struggling or throttling
service sees the client's retry behaviour alone. An error answer about the call itself
(4xx: a name already taken, a condition not met, something missing), which the client then
gets as well, is no such failure: an idempotent retry's ``ExecutionAlreadyExists`` or a
conditional write's 412 leaves the calls after it on the fast path.

It uses a few of aiobotocore's private attributes (see :data:`_INTERNALS`), which is why
aiobotocore and botocore are pinned. Should they be missing anyway, the fast path is off
from the start; should one fail in any other way than a call can (an error answer, a
connection, credentials), it turns itself off. Either way it logs one warning saying so,
and from then on the client makes every call.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Self, cast
from urllib.parse import urlsplit

import aiobotocore
import aiohttp
import botocore
from botocore import xform_name
from botocore.exceptions import BotoCoreError, ClientError
from yarl import URL

from notifier import __version__
from notifier.aws.http_connections import Answer, HttpConnections, Origin
from notifier.aws.signing import Credentials, Scope, SigV4Signer

if TYPE_CHECKING:
    from aiobotocore.client import AioBaseClient

log = logging.getLogger(__name__)

CLIENT_ONLY_SECONDS = 10.0
SIGV4 = ("v4", "s3v4")
_FIXED_HEADERS = (
    (
        "User-Agent",
        f"notifier/{__version__} aiobotocore/{aiobotocore.__version__} "
        f"botocore/{botocore.__version__}",
    ),
    # As botocore asks: the body as it is, never compressed on the way.
    ("Accept-Encoding", "identity"),
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


class Unsupported(Exception):
    """What a fast call cannot do itself; the client does it."""


class ErrorAnswer(Exception):
    """AWS answered with an error (its HTTP ``status``), or with what cannot be read; the
    client makes the call again and reports it."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def refusal(self) -> bool:
        """An answer about the call itself (4xx), not about AWS or the way to it."""
        return self.status is not None and 400 <= self.status < 500


class Throttled(Exception):
    """AWS throttled the call: raised to the caller as the client raises it (``error``)."""

    def __init__(self, error: ClientError) -> None:
        super().__init__(str(error))
        self.error = error


# How a call itself fails: what AWS answered, the connection, the client's credentials.
# Anything else is the fast path failing, and turns it off.
_CALL_FAILURES = (ErrorAnswer, aiohttp.ClientError, OSError, asyncio.TimeoutError, BotoCoreError)


@dataclass(frozen=True, eq=False)
class Target:
    """Where a call goes and how it is signed, as the client's endpoint rules say."""

    url: str
    """The endpoint, with the bucket's path for path-style S3, without a trailing slash."""
    path: str
    """The path of ``url``: what a request's path is appended to, and signed with it."""
    host: str
    scope: Scope
    """The region and the signing name."""
    proxy: str | None
    proxy_headers: dict[str, str]
    origin: Origin

    @property
    def https(self) -> bool:
        return self.origin.https


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    """Appended to the target's URL; starts with a slash."""
    headers: list[tuple[str, str]]
    body: bytes


class FastCall:
    """One API operation of one aiobotocore client, awaited like the client's method.

    ``on_call`` is told the operation's name for each call this makes itself; the ones
    handed to the client are counted by the client's own hooks. An async context manager,
    used inside the client's: leaving it closes its connections.
    """

    operation: ClassVar[str]

    def __init__(
        self,
        client: AioBaseClient,
        on_call: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self._on_call = on_call
        self._clock = clock
        self._client_method: Callable[..., Any] = getattr(client, xform_name(self.operation))
        self._operation_model = client.meta.service_model.operation_model(self.operation)
        self._targets: dict[tuple[str, ...], Target | None] = {}
        self._signer = SigV4Signer()
        self._client_only_until = -1.0
        self._off = False
        # A client told to sign otherwise (unsigned, SigV4a, ...) makes every call itself.
        self.enabled = client.meta.config.signature_version in SIGV4
        if missing := _missing_internals(client):
            self._turn_off(f"aiobotocore {aiobotocore.__version__}'s client has no {missing}")
        else:
            self._http_session = client._endpoint.http_session
        config = client.meta.config
        self.connections = HttpConnections(
            max_connections=config.max_pool_connections,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            ssl_context=self._ssl_context,
        )
        self.made = 0
        """Calls this made itself."""
        self.handed_over = 0
        """Calls handed to the client."""
        self.read_operation()

    def read_operation(self) -> None:
        """What a subclass takes once from the operation's model (raising ``ValueError``
        for an operation it cannot make)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.connections.close()

    async def __call__(self, **params: Any) -> dict[str, Any]:
        if not self.enabled:
            return await self._by_client(params)
        if self._clock() < self._client_only_until:
            return await self._by_client(params, watched=True)
        try:
            request = self.serialize(params)
            target = await self.target(params)
            response = await self._send(target, request)
        except Unsupported as exc:
            log.debug("%s through the client: %s", self.operation, exc)
            return await self._by_client(params)
        except Throttled as exc:
            self._count()
            raise exc.error from None
        except _CALL_FAILURES as exc:  # the client's to retry, and to report
            log.debug("%s through the client after: %r", self.operation, exc)
            return await self._by_client(params, after=exc)
        except Exception as exc:
            self._turn_off(f"it failed: {exc!r}", traceback=True)
            return await self._by_client(params)
        self._count()
        return response

    def _count(self) -> None:
        self.made += 1
        if self._on_call is not None:
            self._on_call(self.operation)

    def _turn_off(self, why: str, traceback: bool = False) -> None:
        """Every call through the client from now on; said once."""
        if self._off:
            return
        self._off, self.enabled = True, False
        log.warning(
            "%s: the fast path is off, the AWS SDK makes every call: %s", self.operation, why,
            exc_info=traceback,
        )  # fmt: skip

    def serialize(self, params: dict[str, Any]) -> Request:
        """The request for ``params``; raises :class:`Unsupported` for what it cannot do."""
        raise NotImplementedError

    def target_key(self, params: dict[str, Any]) -> tuple[str, ...]:
        """The parameters the endpoint depends on."""
        return ()

    def parse(self, status: int, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """The call's result from a 2xx answer; ``headers`` have lower-case names."""
        raise NotImplementedError

    def throttling(self, status: int, body: bytes) -> ClientError | None:
        """The error to raise for an error answer that is throttling; None for any other
        (or one this does not read: the client reads it)."""
        return None

    def signed_body_value(self, target: Target, request: Request) -> str | None:
        """What to sign as the payload: None for its SHA-256."""
        return None

    async def _by_client(
        self, params: dict[str, Any], *, after: Exception | None = None, watched: bool = False
    ) -> dict[str, Any]:
        """The client's call: after the fast call failed (``after``), or ``watched`` while
        AWS is failing, when a failure keeps the calls after it with the client until
        :data:`CLIENT_ONLY_SECONDS` have passed without one. The fast call's refusal (a 4xx
        answer) is no failure when the client's call is refused the same way; one the client
        gets past is, as the fast path would meet it again."""
        self.handed_over += 1
        refusal = after.status if isinstance(after, ErrorAnswer) and after.refusal else None
        if after is not None and refusal is None:
            self._client_only_for_a_while()  # already for calls made meanwhile
        try:
            answer = dict(await self._client_method(**params))
        except Exception as exc:
            if (after is not None or watched) and (refusal is None or refusal != _status(exc)):
                self._client_only_for_a_while()
            raise
        if refusal is not None:
            self._client_only_for_a_while()
        return answer

    def _client_only_for_a_while(self) -> None:
        self._client_only_until = self._clock() + CLIENT_ONLY_SECONDS

    async def target(self, params: dict[str, Any]) -> Target:
        """Where a call with ``params`` goes and how it is signed."""
        key = self.target_key(params)
        if key not in self._targets:
            self._targets[key] = await self._resolve_target(params)
        target = self._targets[key]
        if target is None:
            raise Unsupported("its endpoint needs more than SigV4")
        return target

    async def _resolve_target(self, params: dict[str, Any]) -> Target | None:
        """The client's endpoint rules for ``params``, or None unless plain SigV4 signs."""
        client = self.client
        model = self._operation_model
        context: dict[str, Any] = {
            "client_region": client.meta.region_name,
            "client_config": client.meta.config,
            "auth_type": model.resolved_auth_type,
        }
        url, extra_headers, _ = await client._resolve_endpoint_ruleset(model, params, context)
        signing = context.get("signing", {})
        region = signing.get("region", client.meta.region_name)
        service = signing.get("signing_name", client.meta.service_model.signing_name)
        if context.get("auth_type") not in (None, *SIGV4) or extra_headers or not region:
            return None
        proxies = self._http_session._proxy_config
        proxy = proxies.proxy_url_for(url)
        proxy_headers = proxies.proxy_headers_for(proxy) if proxy else {}
        url = url.rstrip("/")
        parts = urlsplit(url)
        https = parts.scheme == "https"
        origin = Origin(https, parts.hostname or "", parts.port or _DEFAULT_PORTS[parts.scheme])
        scope = Scope(region, service)
        return Target(url, parts.path, _host(url), scope, proxy, proxy_headers, origin)

    async def sign(
        self, target: Target, request: Request, date: datetime | None = None
    ) -> list[tuple[str, str]]:
        """The request's headers with its SigV4 signature, made with the client's
        credentials at ``date`` (now by default)."""
        credentials = self.client._request_signer._credentials
        if credentials is None:
            raise Unsupported("no credentials")
        frozen = await credentials.get_frozen_credentials()
        payload = self.signed_body_value(target, request)
        if payload is None:
            payload = hashlib.sha256(request.body).hexdigest()
        return self._signer.sign(
            request.method,
            target.path + request.path,
            [("host", target.host), *request.headers],
            payload,
            target.scope,
            Credentials(frozen.access_key, frozen.secret_key, frozen.token),
            date,
        )

    async def _send(self, target: Target, request: Request) -> dict[str, Any]:
        headers = await self.sign(target, request)
        if target.proxy is None:
            head = "".join(f"{name}: {value}\r\n" for name, value in (*_FIXED_HEADERS, *headers))
            data = (
                f"{request.method} {target.path}{request.path} HTTP/1.1\r\n{head}"
                f"Content-Length: {len(request.body)}\r\n\r\n"
            ).encode("ascii") + request.body
            answer = await self.connections.request(target.origin, data)
        else:
            answer = await self._send_through_proxy(target, request, headers)
        if not 200 <= answer.status < 300:
            if (throttling := self.throttling(answer.status, answer.body)) is not None:
                raise Throttled(throttling)
            raise ErrorAnswer(f"HTTP {answer.status}", answer.status)
        try:
            return self.parse(answer.status, answer.headers, answer.body)
        except ValueError as exc:
            raise ErrorAnswer(f"an answer that cannot be read: {exc}") from exc

    async def _send_through_proxy(
        self, target: Target, request: Request, headers: list[tuple[str, str]]
    ) -> Answer:
        session = await self._http_session._get_session(target.proxy)
        async with session.request(
            request.method,
            URL(target.url + request.path, encoded=True),
            headers=[*_FIXED_HEADERS, *headers],
            data=request.body,
            proxy=target.proxy,
            proxy_headers=target.proxy_headers,
        ) as response:
            body = await response.read()
            answered = {name.lower(): value for name, value in response.headers.items()}
            return Answer(response.status, answered, body)

    async def _ssl_context(self) -> ssl.SSLContext:
        """The client's TLS settings (verification, CA bundle, client certificate)."""
        # Reads files: off the event loop, as the client does it.
        context, _ = await asyncio.to_thread(self._http_session._build_ssl_contexts, None)
        return cast(ssl.SSLContext, context)


# What the fast path uses of an aiobotocore client beyond its public API: its endpoint rules,
# its credentials, and its HTTP session's connection pools and proxy settings. pyproject.toml
# pins aiobotocore and botocore to versions that have them as used here.
_INTERNALS = (
    "_resolve_endpoint_ruleset",
    "_request_signer._credentials",
    "_endpoint.http_session._get_session",
    "_endpoint.http_session._proxy_config",
    "_endpoint.http_session._build_ssl_contexts",
)


def _status(exc: Exception) -> int | None:
    """The HTTP status of AWS's error answer that ``exc`` is, if it is one."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status if isinstance(status, int) else None
    return None


def _missing_internals(client: object) -> str | None:
    for path in _INTERNALS:
        node = client
        for name in path.split("."):
            if not hasattr(node, name):
                return path
            node = getattr(node, name)
    return None


def _host(url: str) -> str:
    """The Host header for ``url``, as botocore makes it: no default port, no user info."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host
