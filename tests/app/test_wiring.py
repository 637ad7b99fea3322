"""How a daemon's application is made: its parts share one set of AWS clients."""

from __future__ import annotations

import pytest
from aiobotocore.session import AioSession, get_session

from notifier.app.state import SQS
from notifier.aws import clients
from notifier.dashboard.state import INBOX
from tests.support.daemons import DaemonFactory


async def test_every_aws_client_of_a_daemon_comes_from_one_sdk_session(
    daemon_factory: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session reads the models of the services it makes clients of: one per part would
    read them again for each."""
    sessions: list[AioSession] = []

    def counted() -> AioSession:
        sessions.append(get_session())
        return sessions[-1]

    monkeypatch.setattr(clients, "get_session", counted)
    async with daemon_factory(approvals=True) as daemon:
        # Besides the requests' S3 and Step Functions clients: the completion queue's, and
        # the approval inbox's SQS, Step Functions and DynamoDB clients.
        assert SQS in daemon.app and INBOX in daemon.app
    assert len(sessions) == 1
