"""The operations the fast path makes (:mod:`notifier.aws.fast_calls`): S3 PutObject and
Step Functions StartExecution, each serializing its parameters and parsing its answer as
botocore would, and handing to the client whatever it does not serialize itself."""

from __future__ import annotations

import base64
import json
import re
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from botocore.exceptions import ClientError

from notifier.aws.errors import THROTTLING_CODES
from notifier.aws.fast_calls import FastCall, Request, Target, Unsupported

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class PutObject(FastCall):
    """S3 PutObject of a body in memory, with its header parameters.

    Like botocore, it sends a CRC32 checksum of the body and, over HTTPS, signs the payload
    as unsigned (the checksum covers it); over HTTP it signs the body's SHA-256. A checksum,
    MD5 or customer key of the caller's own, or a parameter that is not a string, an integer
    or a flag, goes to the client.
    """

    operation = "PutObject"
    CLIENT_PARAMETERS = frozenset(
        {"ContentMD5", "ChecksumAlgorithm", "SSECustomerKey", "ContentLength"}
    )

    def read_operation(self) -> None:
        shape = self._operation_model.input_shape
        self._members = shape.members
        self._required = frozenset(shape.required_members)
        self._checksum = self.client.meta.config.request_checksum_calculation != "when_required"

    def target_key(self, params: dict[str, Any]) -> tuple[str, ...]:
        return (str(params.get("Bucket")),)

    def serialize(self, params: dict[str, Any]) -> Request:
        missing = self._required - params.keys()
        if missing:
            raise Unsupported(f"missing {', '.join(sorted(missing))}")
        body = params.get("Body", b"")
        if not isinstance(body, bytes):
            raise Unsupported("a body that is not bytes")
        headers: list[tuple[str, str]] = []
        for name, value in params.items():
            member = self._members.get(name)
            if member is None or name in self.CLIENT_PARAMETERS or name.startswith("Checksum"):
                raise Unsupported(f"parameter {name}")
            location = member.serialization.get("location")
            if location == "header":
                headers.append((member.serialization["name"], _header_value(member, value)))
            elif location == "headers":
                prefix = member.serialization["name"]
                if not isinstance(value, dict):
                    raise Unsupported(f"{name} is not a mapping")
                headers.extend((prefix + _token(k), _text(v)) for k, v in value.items())
            elif name not in ("Bucket", "Key", "Body"):
                raise Unsupported(f"parameter {name}")
        key = params["Key"]
        if not isinstance(key, str) or not key:
            raise Unsupported("an empty or non-string Key")
        if self._checksum:
            crc = zlib.crc32(body).to_bytes(4, "big")
            headers.append(("x-amz-checksum-crc32", base64.b64encode(crc).decode()))
            headers.append(("x-amz-sdk-checksum-algorithm", "CRC32"))
        return Request("PUT", "/" + quote(key, safe="/~"), headers, body)

    def signed_body_value(self, target: Target, request: Request) -> str | None:
        return UNSIGNED_PAYLOAD if target.https and self._checksum else None

    def parse(self, status: int, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        return {"ETag": headers.get("etag")}


class JsonCall(FastCall):
    """An operation of a JSON-protocol service whose input members are all strings, such
    as Step Functions' StartExecution; timestamps in its answer become datetimes."""

    def read_operation(self) -> None:
        metadata = self.client.meta.service_model.metadata
        if metadata.get("protocol") != "json":
            raise ValueError(f"{self.operation}: not a JSON-protocol service")
        shape = self._operation_model.input_shape
        if any(m.type_name != "string" for m in shape.members.values()):
            raise ValueError(f"{self.operation}: only string parameters are serialized")
        self._members = frozenset(shape.members)
        self._required = frozenset(shape.required_members)
        output = self._operation_model.output_shape
        self._timestamps = frozenset(
            name for name, m in output.members.items() if m.type_name == "timestamp"
        )
        self._headers = [
            ("content-type", f"application/x-amz-json-{metadata.get('jsonVersion', '1.0')}"),
            ("x-amz-target", f"{metadata['targetPrefix']}.{self.operation}"),
        ]

    def serialize(self, params: dict[str, Any]) -> Request:
        if not params.keys() <= self._members or not self._required <= params.keys():
            raise Unsupported("unknown or missing parameters")
        if not all(isinstance(value, str) for value in params.values()):
            raise Unsupported("a parameter that is not a string")
        return Request("POST", "/", self._headers, json.dumps(params).encode())

    def parse(self, status: int, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        answer = json.loads(body) if body else {}
        if not isinstance(answer, dict):
            raise ValueError("the answer is not a JSON object")
        for name in self._timestamps & answer.keys():
            answer[name] = datetime.fromtimestamp(float(answer[name]), UTC)
        return answer

    def throttling(self, status: int, body: bytes) -> ClientError | None:
        """A JSON error answer's ``__type`` (``[namespace#]Code``) if it is throttling."""
        try:
            answer = json.loads(body)
        except ValueError:
            return None
        if not isinstance(answer, dict):
            return None
        code = str(answer.get("__type", "")).rpartition("#")[2]
        if code not in THROTTLING_CODES:
            return None
        message = str(answer.get("message") or answer.get("Message") or "")
        error: Any = {"Code": code, "Message": message}
        return ClientError(
            {"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}, self.operation
        )


class StartExecution(JsonCall):
    operation = "StartExecution"


def _header_value(member: Any, value: Any) -> str:
    if member.type_name == "string":
        return _text(value)
    if member.type_name in ("integer", "long") and type(value) is int:
        return str(value)
    if member.type_name == "boolean" and isinstance(value, bool):
        return "true" if value else "false"
    raise Unsupported(f"a {member.type_name} header")


def _token(name: Any) -> str:
    """A header name's part: an HTTP token."""
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise Unsupported("a header name that is not an HTTP token")
    return name


def _text(value: Any) -> str:
    """A header value botocore would send as it is: ASCII text, without control characters."""
    if not isinstance(value, str) or not value.isascii() or not value.isprintable():
        raise Unsupported("a header value that is not printable ASCII text")
    return value
