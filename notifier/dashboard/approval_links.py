"""Approval links: a request sent out as a pair of signed, expiring links (approve, reject),
for a person who decides by e-mail or chat without an API key.

A link is ``<public_url>/approvals/<id>/link?d=approve&t=<token>``; the token is
``<expiry>.<signature>``, the signature an HMAC-SHA256, with the configured secret, of the
approval's id, the decision and the expiry, so a link decides only its own request, only
its own way, and only until it expires. It is single-use because the decision is: the
approvals table takes one decision per request, whatever made it.

When an instance first moves a request into the table it publishes the links on the
approval topic (:class:`LinkAnnouncer`); SNS takes them to e-mail (a text of its own) and
to anything else (a JSON message). Opening a link shows a confirmation page; only the
page's form, a POST to the same URL, decides, so a mail scanner or a chat preview that
fetches the link decides nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from botocore.exceptions import BotoCoreError, ClientError

from notifier.dashboard.approval_table import Approval, Decision

if TYPE_CHECKING:
    from types_aiobotocore_sns import SNSClient

log = logging.getLogger(__name__)

DECISIONS = {"approve": Decision.APPROVED, "reject": Decision.REJECTED}
"""A link's ``d`` parameter, and the decision it makes."""
DECIDED_BY = "link"
"""Who the approvals table says decided, for a decision made through a link."""


class LinkError(Exception):
    """A link that decides nothing: ``status`` is the HTTP answer (400 malformed, 403 not
    signed by us, 410 expired)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ApprovalLinks:
    """Signs and checks links with ``secret``; each is valid ``ttl`` seconds after it is
    made, by ``clock`` (seconds since the epoch)."""

    secret: bytes = field(repr=False)
    public_url: str
    ttl: float
    clock: Callable[[], float] = time.time

    def link(self, approval_id: str, decision: str) -> str:
        """The URL that makes ``decision`` (``approve`` or ``reject``) for the request."""
        expires = int(self.clock() + self.ttl)
        token = f"{expires}.{self._signature(approval_id, decision, expires)}"
        path = f"/approvals/{approval_id}/link"
        return f"{self.public_url.rstrip('/')}{path}?{urlencode({'d': decision, 't': token})}"

    def expiry(self) -> datetime:
        """When a link made now expires."""
        return datetime.fromtimestamp(int(self.clock() + self.ttl), UTC)

    def check(self, approval_id: str, decision: str, token: str) -> Decision:
        """The decision a link with ``decision`` and ``token`` makes for the request; raises
        :class:`LinkError` for one that makes none."""
        if decision not in DECISIONS:
            raise LinkError(400, "this link names no decision (approve or reject)")
        expires_text, _, signature = token.partition(".")
        if not expires_text.isdigit() or not signature:
            raise LinkError(400, "this link's token is malformed")
        expected = self._signature(approval_id, decision, int(expires_text))
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            raise LinkError(403, "this link is not valid: it was not made for this decision")
        if self.clock() >= int(expires_text):
            raise LinkError(410, "this link has expired; decide on the dashboard instead")
        return DECISIONS[decision]

    def _signature(self, approval_id: str, decision: str, expires: int) -> str:
        signed = f"{approval_id}\n{decision}\n{expires}".encode()
        digest = hmac.new(self.secret, signed, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class LinkAnnouncer:
    """Publishes a request's links on the approval topic ``topic_arn``."""

    def __init__(self, sns: SNSClient, topic_arn: str, links: ApprovalLinks) -> None:
        self.sns = sns
        self.topic_arn = topic_arn
        self.links = links

    def message(self, approval: Approval) -> dict[str, Any]:
        """What goes out for ``approval``: the request as the API shows it, and its links."""
        return approval.to_json() | {
            "approve": self.links.link(approval.id, "approve"),
            "reject": self.links.link(approval.id, "reject"),
            "linksExpireAt": self.links.expiry().isoformat(),
        }

    async def announce(self, approval: Approval) -> None:
        """Publish the links; a failure is logged (the request waits on the dashboard)."""
        message = self.message(approval)
        text = (
            f"{approval.execution_name} waits for a decision.\n\n"
            f"File: {json.dumps(approval.file)}\n\n"
            f"Approve: {message['approve']}\n\nReject: {message['reject']}\n\n"
            f"Each link opens a page that asks you to confirm; the links expire at "
            f"{message['linksExpireAt']} and the first decision made counts.\n"
        )
        try:
            await self.sns.publish(
                TopicArn=self.topic_arn,
                Subject=f"Approval requested: {approval.execution_name}"[:100],
                MessageStructure="json",
                Message=json.dumps({"default": json.dumps(message), "email": text}),
            )
        except (ClientError, BotoCoreError) as exc:
            log.warning(
                "approvals: could not publish the links of %s: %s (decide on the dashboard)",
                approval.id, exc,
            )  # fmt: skip
