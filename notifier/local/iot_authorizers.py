"""Stands in for AWS IoT Core's custom authorizer registry, which moto does not have.

``AWS::IoT::Authorizer`` resources of the template (see ``cloudformation_resources``) are
recorded here, and the IoT API answers ``DescribeAuthorizer`` from them, so the local broker
finds an authorizer's Lambda function by the name a client gives, as IoT Core does.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Authorizer:
    name: str
    arn: str
    function_arn: str
    status: str
    signing_disabled: bool
    created: datetime

    def description(self) -> dict[str, Any]:
        return {
            "authorizerName": self.name,
            "authorizerArn": self.arn,
            "authorizerFunctionArn": self.function_arn,
            "status": self.status,
            "signingDisabled": self.signing_disabled,
            "creationDate": self.created,
            "lastModifiedDate": self.created,
        }


_authorizers: dict[tuple[str, str, str], Authorizer] = {}
_lock = threading.Lock()


def register(account: str, region: str, properties: dict[str, Any]) -> Authorizer:
    name = str(properties["AuthorizerName"])
    authorizer = Authorizer(
        name=name,
        arn=f"arn:aws:iot:{region}:{account}:authorizer/{name}",
        function_arn=str(properties["AuthorizerFunctionArn"]),
        status=str(properties.get("Status", "INACTIVE")),
        signing_disabled=str(properties.get("SigningDisabled", False)).lower() == "true",
        created=datetime.now(UTC),
    )
    with _lock:
        _authorizers[(account, region, name)] = authorizer
    return authorizer


def remove(account: str, region: str, name: str) -> None:
    with _lock:
        _authorizers.pop((account, region, name), None)


def arn_of(name: str) -> str:
    with _lock:
        return next(a.arn for key, a in _authorizers.items() if key[2] == name)


def install() -> None:
    from moto.core.exceptions import JsonRESTError
    from moto.core.responses import ActionResult
    from moto.iot.responses import IoTResponse

    class ResourceNotFound(JsonRESTError):
        code = 404

    def describe_authorizer(self: Any) -> Any:
        name = self._get_param("authorizerName")
        with _lock:
            authorizer = _authorizers.get((self.current_account, self.region, name))
        if authorizer is None:
            raise ResourceNotFound("ResourceNotFoundException", f"no authorizer {name}")
        return ActionResult({"authorizerDescription": authorizer.description()})

    IoTResponse.describe_authorizer = describe_authorizer  # type: ignore[attr-defined]  # added to moto
