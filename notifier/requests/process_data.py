"""The process data objects in S3: a transaction's request body, stored under its id for the
workflow to read (a sidecar route's input names it) and for the answer to carry, with the
route it was started on and, for a keyed transaction, the request's fingerprint."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypedDict

from botocore.exceptions import BotoCoreError, ClientError

from notifier.aws.clients import PutObjectCall, error_code, span_attributes
from notifier.aws.errors import AwsError
from notifier.requests.idempotency import IdempotencyConflictError
from notifier.tracing import Tracing

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

ROUTE_METADATA = "notifier-route"
FINGERPRINT_METADATA = "notifier-request-sha256"
"""The SHA-256 of the request a keyed transaction was started with (see
:mod:`notifier.requests.idempotency`), kept on its process data object."""
# S3's answers to a conditional write that found the object there (or being written).
_EXISTS_CODES = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")


class _WriteCondition(TypedDict, total=False):
    """What makes a PutObject conditional (nothing: it overwrites)."""

    IfNoneMatch: str


class ProcessData:
    """The process data bucket. ``put_object`` defaults to the client's own method (see
    :mod:`notifier.aws.fast_calls` for a cheaper one); ``tracing`` makes a span of each
    PutObject."""

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        *,
        put_object: PutObjectCall | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._s3 = s3
        self._put_object: PutObjectCall = put_object or s3.put_object
        self.bucket = bucket
        self.tracing = tracing or Tracing()

    async def check_reachable(self) -> str | None:
        """None if the bucket answers (AWS reachable, access granted), else why."""
        try:
            await self._s3.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            return str(exc)
        return None

    async def store(
        self, route: str, txn_id: str, body: dict[str, Any], fingerprint: str | None = None
    ) -> None:
        """Store ``body`` under ``txn_id``. With a ``fingerprint`` (a keyed transaction)
        only if there is no object yet, and one there with another fingerprint means
        another request took the key (:class:`IdempotencyConflictError`)."""
        try:
            await self._put(route, txn_id, body, fingerprint)
        except AwsError as exc:
            if fingerprint is None or exc.code not in _EXISTS_CODES:
                raise
            stored = await self._stored_fingerprint(txn_id)
            if stored is not None and stored != fingerprint:
                raise IdempotencyConflictError(txn_id) from None

    async def read(self, txn_id: str) -> Any:
        try:
            response = await self._s3.get_object(Bucket=self.bucket, Key=txn_id)
            async with response["Body"] as stream:
                data = await stream.read()
        except (ClientError, BotoCoreError) as exc:
            raise AwsError.wrap("GetObject", exc) from exc
        return json.loads(data)

    async def route_of(self, txn_id: str) -> str | None:
        """The route the transaction was started on; None if its object is gone or has
        none."""
        route = (await self._metadata(txn_id)).get(ROUTE_METADATA)
        return str(route) if route is not None else None

    async def _put(
        self, route: str, txn_id: str, body: dict[str, Any], fingerprint: str | None
    ) -> None:
        metadata = {ROUTE_METADATA: route}
        conditional: _WriteCondition = {}
        if fingerprint is not None:
            metadata[FINGERPRINT_METADATA] = fingerprint
            conditional["IfNoneMatch"] = "*"
        try:
            with self.tracing.span("S3 PutObject", span_attributes(self._put_object)):
                await self._put_object(
                    Bucket=self.bucket,
                    Key=txn_id,
                    Body=json.dumps(body).encode(),
                    ContentType="application/json",
                    ServerSideEncryption="AES256",
                    Metadata=metadata,
                    **conditional,
                )
        except (ClientError, BotoCoreError) as exc:
            raise AwsError.wrap("PutObject", exc) from exc

    async def _stored_fingerprint(self, txn_id: str) -> str | None:
        """The fingerprint on the object; None if it has none (written by something else)
        or is gone."""
        stored = (await self._metadata(txn_id)).get(FINGERPRINT_METADATA)
        return str(stored) if stored is not None else None

    async def _metadata(self, txn_id: str) -> dict[str, Any]:
        """The object's metadata (HeadObject); empty if there is no object."""
        try:
            head = await self._s3.head_object(Bucket=self.bucket, Key=txn_id)
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return {}
            raise AwsError.wrap("HeadObject", exc) from exc
        except BotoCoreError as exc:
            raise AwsError.wrap("HeadObject", exc) from exc
        metadata: dict[str, Any] = head.get("Metadata", {})
        return metadata
