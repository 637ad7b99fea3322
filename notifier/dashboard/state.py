"""What the dashboard keeps on the application."""

from __future__ import annotations

from aiohttp import web

from notifier.dashboard.approval_links import ApprovalLinks
from notifier.dashboard.approvals import ApprovalInbox
from notifier.dashboard.board import Board
from notifier.dashboard.graph import ExecutionGraphs
from notifier.dashboard.status import StatusFeed

BOARD = web.AppKey("board", Board)
GRAPHS = web.AppKey("execution_graphs", ExecutionGraphs)
LINKS = web.AppKey("approval_links", ApprovalLinks)
INBOX = web.AppKey("approval_inbox", ApprovalInbox)
"""Absent without ``[dashboard] approval_queue_url`` and ``approval_table``."""
STATUS_FEED = web.AppKey("status_feed", StatusFeed)
"""Absent in ``poll`` completion mode."""
