"""Fixtures shared by the whole suite: one local stack per test session, on free ports."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from notifier.local.stack import LocalStack, LocalStackSettings


@pytest.fixture(scope="session")
async def local_stack() -> AsyncIterator[LocalStack]:
    # The default stack name and stage: config/local.toml's routes name their state machines.
    settings = LocalStackSettings(
        aws_port=0, mqtt_port=0, mqtt_tls_port=0, mqtt_wss_port=0, issuer_port=0
    )
    async with LocalStack(settings) as stack:
        yield stack
