"""The OpenAPI 3.1 document of the daemon's HTTP API, served at ``/openapi.json``.

Made from the routes the application serves (:data:`~notifier.app.routing.ROUTES`, from the
route table) and the running configuration, so the paths and route names it lists are the
ones served. What a route's access and method imply is added here, the same for every route:
its security and 401/429 with a key (429 also beyond a key's ``max_held`` on a held route),
403 for a key without the route's role, 403 for another site's page while keys are off, 415
for a body that is not JSON. Tests check real answers of every route against it, and a fuzz
run checks the API against it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from notifier import __version__
from notifier.apikeys import HEADER as API_KEY_HEADER
from notifier.app.middlewares import BODY_METHODS, FORM, JSON
from notifier.app.routing import Access, Route
from notifier.app.schemas import SCHEMAS


def json_answer(schema: str, description: str, headers: Iterable[str] = ()) -> dict[str, Any]:
    """A JSON answer of component ``schema``, or of any of ``A|B``."""
    refs = [{"$ref": f"#/components/schemas/{name}"} for name in schema.split("|")]
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": refs[0] if len(refs) == 1 else {"anyOf": refs}}},
    }
    if headers:
        response["headers"] = {name: {"schema": {"type": "string"}} for name in headers}
    return response


def error(description: str, *headers: str) -> dict[str, Any]:
    return json_answer("Error", description, headers)


def held_answers() -> dict[str, Any]:
    """The answers of a request held for a transaction's end."""
    return {
        "200": json_answer("Answer", "SUCCEEDED"),
        "202": json_answer("Answer", "still running", ["Location", "Retry-After"]),
        "409": json_answer("Answer", "ABORTED"),
        "502": json_answer("Answer|Error", "FAILED, or an AWS error (an Error with awsErrorCode)"),
        "504": json_answer("Answer", "TIMED_OUT"),
    }


def aws_errors() -> dict[str, Any]:
    return {"502": error("AWS error"), "503": error("AWS is throttling", "Retry-After")}


def content(media_type: str, description: str, schema: Any = None) -> dict[str, Any]:
    """An answer of ``media_type``, with ``schema`` if given."""
    media = {} if schema is None else {"schema": schema}
    return {"description": description, "content": {media_type: media}}


KEYED = {
    "401": error("missing or unknown API key"),
    "429": error("over the API key's rate", "Retry-After"),
}
HELD_KEYED = error("over the API key's rate, or it holds its max_held requests", "Retry-After")
NOT_JSON = error("a body not sent as Content-Type: application/json")
FOREIGN_ORIGIN = error(
    "sent from another origin's page, or, to a daemon on loopback, to a name that is not"
)
SECURITY: dict[Access, list[dict[str, list[str]]]] = {
    Access.OPEN: [],
    Access.OPTIONAL_KEY: [{"apiKey": []}, {}],
    Access.API_KEY: [{"apiKey": []}],
    Access.APPROVER: [{"apiKey": []}],
    Access.APPROVER_OR_ADMIN: [{"apiKey": []}],
    Access.ADMIN: [{"apiKey": []}],
}


def document(
    routes: Iterable[Route], route_names: Iterable[str], keys_required: bool
) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {
        **SCHEMAS,
        "RouteName": {"type": "string", "enum": sorted(route_names)},
    }
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, keys_required)
        schemas.update(route.operation.schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "notifier",
            "version": __version__,
            "description": "AWS Step Functions workflows as synchronous HTTP calls.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}
            },
        },
    }


def _operation(route: Route, keys_required: bool) -> dict[str, Any]:
    operation = route.operation
    responses = dict(operation.responses)
    if route.access not in (Access.OPEN, Access.OPTIONAL_KEY):
        responses |= KEYED
        if route.held:
            responses["429"] = HELD_KEYED
    if route.method in BODY_METHODS:
        responses["415"] = NOT_JSON
    if not keys_required:  # then another site's page is refused by its Origin
        responses["403"] = _also_foreign(responses.get("403"))
    elif route.access.roles:
        responses["403"] = _needs_role(route.access, responses.get("403"))
    described: dict[str, Any] = {"summary": operation.summary, "operationId": operation.id}
    if keys_required and route.access is not Access.OPEN:
        described["security"] = SECURITY[route.access]
    if operation.parameters:
        described["parameters"] = list(operation.parameters)
    if operation.body is not None:
        media_types = [JSON, FORM] if route.form else [JSON]
        described["requestBody"] = {
            "required": operation.body_required,
            "content": {media: {"schema": operation.body} for media in media_types},
        }
        if operation.body_description is not None:
            described["requestBody"]["description"] = operation.body_description
    described["responses"] = responses
    return described


def _also_foreign(otherwise: Any) -> dict[str, Any]:
    """The 403 of a route while keys are off: another site's page, or the route's own
    reason (in its own media type) if it has one."""
    if otherwise is None:
        return FOREIGN_ORIGIN
    return {
        "description": f"{otherwise['description']}; or {FOREIGN_ORIGIN['description']}",
        "content": {**otherwise.get("content", {}), **FOREIGN_ORIGIN["content"]},
    }


def _needs_role(access: Access, otherwise: Any) -> dict[str, Any]:
    """The 403 of a route that takes a role, with the route's own reason if it has one."""
    reason = f"the API key has not the {access.value} role"
    if otherwise is not None:
        reason += f"; or {otherwise['description']}"
    return error(reason)
