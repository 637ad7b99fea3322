"""What each of the suite's processes makes once, or lets go of, that a daemon's process
would not need to: the suite runs dozens of daemons, and hundreds of AWS clients, in one.

Nothing here changes what a test sees: the AWS SDK's data files say the same to every
client, a TLS context of the same settings verifies the same, and an application that has
stopped serves nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import aiohttp.web_app
import botocore.loaders
import botocore.session
import pytest
from aiobotocore.httpsession import AIOHTTPSession


@pytest.fixture(scope="session", autouse=True)
def aws_sdk_data_read_once() -> Iterator[None]:
    """Every AWS SDK session reads the SDK's data files through one loader: a daemon's own
    session would parse botocore's endpoint data and each service's model again, a fifth
    of a second of CPU and more."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            botocore.session, "create_loader", functools.cache(botocore.loaders.create_loader)
        )
        yield


@pytest.fixture(scope="session", autouse=True)
def tls_contexts_made_once() -> Iterator[None]:
    """aiobotocore clients of the same TLS settings share one context. Each client makes its
    own as it first connects, loading the CA bundle (30 ms of CPU), even for the local
    stack's plain-HTTP endpoint."""
    build = AIOHTTPSession._build_ssl_contexts
    made: dict[tuple[object, ...], Any] = {}

    @functools.wraps(build)  # its signature, which tests/test_pins.py checks, is build's
    def shared(session: AIOHTTPSession, proxy_url: str | None) -> Any:
        settings = (
            session._verify,
            session._cert_file,
            session._key_file,
            proxy_url,
            repr(session._proxy_config.settings),
        )
        if settings not in made:
            made[settings] = build(session, proxy_url)
        return made[settings]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AIOHTTPSession, "_build_ssl_contexts", shared)
        yield


@pytest.fixture(autouse=True)
def finished_applications_let_go() -> Iterator[None]:
    """aiohttp caches the middleware chain of the last 1,024 handlers that served, each with
    its application: the daemons of finished tests would stay alive (clients, metrics, held
    state), and every full garbage collection walk them again."""
    yield
    aiohttp.web_app._cached_build_middleware.cache_clear()
