"""The pinned dependencies are the versions installed, and the internals of theirs that the
daemon and the local stack use or patch still have the signatures they were written for:
an upgrade that changes one fails here, by name, before it fails somewhere far away."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re
import tomllib
from inspect import Parameter
from pathlib import Path
from typing import Any, get_args

import pytest

from notifier.aws.clients import Service
from notifier.local import broker, broker_auth, broker_sessions, broker_stop

VAR_POSITIONAL, VAR_KEYWORD = Parameter.VAR_POSITIONAL, Parameter.VAR_KEYWORD
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

# module:qualified name -> its signature, as the pinned versions have it.
INTERNALS = {
    # notifier.aws.fast_calls: endpoint rules and the HTTP session of aiobotocore's clients
    "aiobotocore.client:AioBaseClient._resolve_endpoint_ruleset": (
        "(self, operation_model, params, request_context, ignore_signing_region=False)"
    ),
    "aiobotocore.httpsession:AIOHTTPSession._get_session": "(self, proxy_url)",
    "aiobotocore.httpsession:AIOHTTPSession._build_ssl_contexts": "(self, proxy_url)",
    # notifier.local.conditional_writes: the writes it makes atomic
    "moto.dynamodb.models:DynamoDBBackend.put_item": (
        "(self, table_name: str, item_attrs: dict[str, typing.Any], expected: dict[str, "
        "typing.Any] | None = None, condition_expression: str | None = None, "
        "expression_attribute_names: dict[str, typing.Any] | None = None, "
        "expression_attribute_values: dict[str, typing.Any] | None = None, overwrite: bool = "
        "False, return_values_on_condition_check_failure: str | None = None) -> "
        "moto.dynamodb.models.dynamo_type.Item"
    ),
    "moto.dynamodb.models:DynamoDBBackend.update_item": (
        "(self, table_name: str, key: dict[str, dict[str, typing.Any]], update_expression: "
        "str, expression_attribute_names: dict[str, typing.Any], expression_attribute_values: "
        "dict[str, typing.Any], attribute_updates: dict[str, typing.Any] | None = None, "
        "expected: dict[str, typing.Any] | None = None, condition_expression: str | None = "
        "None, return_values_on_condition_check_failure: str | None = None) -> "
        "moto.dynamodb.models.dynamo_type.Item"
    ),
    "moto.dynamodb.models:DynamoDBBackend.delete_item": (
        "(self, table_name: str, key: dict[str, typing.Any], expression_attribute_names: "
        "dict[str, typing.Any] | None = None, expression_attribute_values: dict[str, "
        "typing.Any] | None = None, condition_expression: str | None = None, "
        "return_values_on_condition_check_failure: str | None = None) -> "
        "moto.dynamodb.models.dynamo_type.Item | None"
    ),
    "moto.dynamodb.models:DynamoDBBackend.transact_write_items": (
        "(self, transact_items: list[dict[str, typing.Any]]) -> None"
    ),
    "moto.s3.responses:S3Response.put_object": (
        "(self) -> tuple[int, dict[str, typing.Any], str | bytes]"
    ),
    "moto.stepfunctions.parser.models:StepFunctionsParserBackend.start_execution": (
        "(self, state_machine_arn: str, name: str = None, execution_input: str = None, "
        "trace_header: str = None) -> moto.stepfunctions.parser.backend.execution.Execution"
    ),
}


def pins() -> dict[str, str]:
    """Every ``name==version`` of the project's dependencies and extras."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    found = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^;,\s]+)", requirement)
        if match:
            found[match[1]] = match[2]
    return found


def resolve(name: str) -> Any:
    module, _, qualified = name.partition(":")
    found: Any = importlib.import_module(module)
    for part in qualified.split("."):
        found = inspect.getattr_static(found, part)
    return found


def test_the_pinned_versions_are_the_ones_installed() -> None:
    pinned = pins()
    assert {"aiobotocore", "botocore", "moto", "amqtt"} <= pinned.keys()
    installed = {name: importlib.metadata.version(name) for name in pinned}
    assert installed == pinned


def test_the_clients_stubs_are_aiobotocores_version_for_every_service_called() -> None:
    pinned = pins()
    stubs = {name: version for name, version in pinned.items() if name.startswith("types-aio")}
    assert stubs.keys() == {f"types-aiobotocore-{service}" for service in get_args(Service)}
    assert set(stubs.values()) == {pinned["aiobotocore"]}


@pytest.mark.parametrize("name", sorted(INTERNALS))
def test_an_internal_in_use_keeps_its_signature(name: str) -> None:
    assert str(inspect.signature(resolve(name))) == INTERNALS[name]


def overrides() -> list[tuple[str, Any, Any]]:
    """Every method the local broker's classes define over one of amqtt's."""
    found = []
    for module in (broker, broker_auth, broker_sessions, broker_stop):
        for cls in vars(module).values():
            if not inspect.isclass(cls) or cls.__module__ != module.__name__:
                continue
            bases = [b for b in cls.__mro__[1:] if b.__module__.startswith("amqtt")]
            for attribute, ours in vars(cls).items():
                theirs = next((vars(b)[attribute] for b in bases if attribute in vars(b)), None)
                if inspect.isfunction(ours) and inspect.isfunction(theirs):
                    found.append((f"{cls.__name__}.{attribute}", ours, theirs))
    return found


def test_the_local_brokers_overrides_take_what_amqtt_passes() -> None:
    checked = overrides()
    assert len(checked) >= 3, checked
    for name, ours, theirs in checked:
        parameters = inspect.signature(ours).parameters.values()
        if {p.kind for p in parameters} >= {VAR_POSITIONAL, VAR_KEYWORD}:
            continue  # passes everything on
        theirs_parameters = list(inspect.signature(theirs).parameters)
        assert [p.name for p in parameters] == theirs_parameters, name
