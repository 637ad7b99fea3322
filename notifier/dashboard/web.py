"""The dashboard on the daemon's application: its board, the approval inbox and the status
feed, which exist while the application runs, and the page's files. Its routes are in the
route table (:mod:`notifier.routes`), their handlers in :mod:`notifier.dashboard.handlers`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from notifier.app.routing import Access, add_static
from notifier.app.state import (
    AWS_CLIENTS,
    AWS_SETTINGS,
    EXECUTIONS,
    INSTANCE_ID,
    REGISTRY,
    SETTINGS,
)
from notifier.app.wiring import mqtt_access
from notifier.config import DashboardSettings
from notifier.dashboard.approval_links import ApprovalLinks, LinkAnnouncer
from notifier.dashboard.approvals import ApprovalInbox
from notifier.dashboard.board import Board
from notifier.dashboard.graph import ExecutionGraphs
from notifier.dashboard.handlers import STATIC
from notifier.dashboard.state import BOARD, GRAPHS, INBOX, LINKS, STATUS_FEED
from notifier.dashboard.status import StatusFeed, StatusHandler

log = logging.getLogger(__name__)


def install(app: web.Application) -> None:
    settings = app[SETTINGS].current
    board = app[BOARD] = Board(settings.dashboard.recent_executions)
    app[REGISTRY].on_tracked.append(board.tracked)
    app[REGISTRY].on_resolved.append(board.resolved)
    app.cleanup_ctx.append(dashboard_context)

    async def close_streams(app: web.Application) -> None:
        board.close()

    app.on_shutdown.append(close_streams)
    add_static(app, "/dashboard/static", STATIC, Access.OPEN)


async def dashboard_context(app: web.Application) -> AsyncIterator[None]:
    """The execution graphs, the approval inbox (when configured) and the status feed (in
    ``mqtt`` mode)."""
    settings = app[SETTINGS].current
    board = app[BOARD]
    app[GRAPHS] = ExecutionGraphs(app[EXECUTIONS])
    handlers: list[StatusHandler] = [board.status_changed]
    async with contextlib.AsyncExitStack() as stack:
        queue_url = settings.dashboard.approval_queue_url
        table = settings.dashboard.approval_table
        if queue_url is not None and table is not None:
            clients = app[AWS_CLIENTS]
            announcer = None
            if (links := approval_links(settings.dashboard)) is not None:
                app[LINKS] = links
                sns = await stack.enter_async_context(clients.client("sns"))
                announcer = LinkAnnouncer(sns, str(settings.dashboard.approval_topic_arn), links)
            inbox = ApprovalInbox(
                await stack.enter_async_context(clients.client("sqs")),
                await stack.enter_async_context(clients.client("stepfunctions")),
                await stack.enter_async_context(clients.client("dynamodb")),
                queue_url,
                table,
                instance_id=app[INSTANCE_ID],
                on_change=board.approvals_changed,
                last_events=app[EXECUTIONS].last_events,
                on_new=announcer.announce if announcer is not None else None,
                wait_seconds=settings.sqs.wait_seconds,
            )
            app[INBOX] = await stack.enter_async_context(inbox)
            handlers.append(inbox.status_changed)
        if settings.daemon.completion == "mqtt":
            endpoint, tokens = await mqtt_access(app, lambda issuer: issuer.dashboard_token())
            feed = StatusFeed(
                settings.mqtt,
                instance_id=app[INSTANCE_ID],
                handlers=handlers,
                endpoint=endpoint,
                aws=app[AWS_SETTINGS],
                tokens=tokens,
                refresh_margin=settings.iotauth.refresh_margin,
            )
            app[STATUS_FEED] = await stack.enter_async_context(feed)
        yield


def approval_links(dashboard: DashboardSettings) -> ApprovalLinks | None:
    """The links' signer, when the public URL and the secret are set (and the approval
    topic and the approvals, without which links are off, as the log says)."""
    if not (dashboard.public_url and dashboard.approval_link_secret):
        return None
    if not (dashboard.approval_topic_arn and dashboard.approval_table):
        log.warning(
            "approval links are off: they need [dashboard] approval_topic_arn (the stack's "
            "ApprovalTopicArn), approval_queue_url and approval_table"
        )
        return None
    return ApprovalLinks(
        dashboard.approval_link_secret.encode(), dashboard.public_url, dashboard.approval_link_ttl
    )
