"""Fixtures shared by the whole suite: one local stack per test session, on free ports, and
daemons against it."""

from __future__ import annotations

import functools
import gc
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import aiohttp
import aiohttp.web_app
import botocore.loaders
import botocore.session
import pytest

from notifier.daemon import Daemon
from notifier.local.settings import LocalStackSettings
from notifier.local.stack import LocalStack
from tests.support.daemons import TIMEOUT_MACHINE, DaemonFactory, settings_for
from tests.support.silent_workflows import create_silent_workflows

# The template and its packaged form, for the template's and the packaging's tests.
pytest_plugins = ["tests.support.template"]


@pytest.fixture(scope="session", autouse=True)
def one_aws_sdk_data_loader() -> Iterator[None]:
    """Every AWS SDK session in this process reads the SDK's data files through one loader.

    A daemon makes a session of its own, whose loader parses botocore's endpoint data and
    each service's model again (a fifth of a second of CPU and more): the suite starts
    dozens of daemons per process. The loader only caches what the files hold."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            botocore.session, "create_loader", functools.cache(botocore.loaders.create_loader)
        )
        yield


@pytest.fixture(autouse=True)
def finished_applications_let_go() -> Iterator[None]:
    """aiohttp caches the middleware chain of the last 1,024 handlers that served, each with
    its application: the daemons of finished tests would stay alive (clients, metrics, held
    state), and every full garbage collection walk them again."""
    yield
    aiohttp.web_app._cached_build_middleware.cache_clear()


@pytest.fixture(scope="session")
async def local_stack() -> AsyncIterator[LocalStack]:
    # The default stack name and stage: the local configuration's routes name their
    # state machines.
    # Every execution's status on the status topics: the tests follow single executions
    # there, far below the rate the default sampling is for.
    settings = LocalStackSettings(
        aws_port=0,
        mqtt_port=0,
        mqtt_tls_port=0,
        mqtt_wss_port=0,
        issuer_port=0,
        parameters={"StatusFeedOneIn": "1"},
    )
    async with LocalStack(settings) as stack:
        # The stack and every module imported live as long as the process: frozen, as the
        # daemon freezes what it starts with (notifier.ops.gc_schedule), a full collection
        # walks what the tests make rather than all of that again.
        gc.freeze()
        yield stack


@pytest.fixture(scope="session")
async def stack(local_stack: LocalStack) -> LocalStack:
    async with local_stack.aws().client("stepfunctions") as sfn:
        created = await sfn.create_state_machine(
            name="notifier-test-TimesOut",
            definition=json.dumps(TIMEOUT_MACHINE),
            roleArn="arn:aws:iam::123456789012:role/notifier-test",
        )
    local_stack.outputs["TestTimesOutStateMachineArn"] = created["stateMachineArn"]
    await create_silent_workflows(local_stack)
    return local_stack


@pytest.fixture(scope="session")
def daemon_factory(stack: LocalStack) -> DaemonFactory:
    @asynccontextmanager
    async def start(*, approvals: bool = False, **env: str) -> AsyncIterator[Daemon]:
        async with Daemon(settings_for(stack, approvals=approvals, **env)) as daemon:
            yield daemon

    return start


@pytest.fixture(scope="session")
async def daemon(daemon_factory: DaemonFactory) -> AsyncIterator[Daemon]:
    async with daemon_factory() as running:
        yield running


@pytest.fixture(scope="session")
async def other_daemon(daemon_factory: DaemonFactory) -> AsyncIterator[Daemon]:
    """A second instance on the same stack."""
    async with daemon_factory() as running:
        yield running


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session
