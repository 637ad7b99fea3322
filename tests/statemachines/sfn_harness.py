"""Test-only harness: the whole stack deployed into moto, in this process.

moto executes the state machines (``execute_state_machine``), but runs Lambda
code only in Docker. Here ``LambdaFunction._invoke_lambda`` is replaced by a
call of the function's own Python handler, unpacked from the zip that was
deployed; a raised exception becomes the AWS error payload
(``errorMessage``, ``errorType``, ``stackTrace``), whose ``errorType`` Step
Functions uses as the error name. The local stack in ``notifier/local`` has
its own, real bridge; nothing here is used outside the tests.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import sys
import threading
import time
import traceback
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import xform_name
from botocore.session import get_session
from moto import mock_aws
from moto.awslambda.models import LambdaFunction
from moto.core import DEFAULT_ACCOUNT_ID
from moto.iotdata.models import iotdata_backends
from moto.stepfunctions.models import stepfunctions_backends
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
    state_task_service,
    state_task_service_aws_sdk,
)
from moto.stepfunctions.parser.models import stepfunctions_parser_backends

from notifier.package import load_template, package_template, source_dir

REGION = "us-east-1"
ARTIFACTS_BUCKET = "notifier-test-artifacts"
TOPIC_ROOT = "notifier"


@dataclass
class Invocation:
    function_name: str
    event: Any
    error_type: str | None


@dataclass
class LocalLambdas:
    """Runs deployed Lambda functions' handlers in this process and records each call."""

    directory: Path
    calls: list[Invocation] = field(default_factory=list)
    _modules: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self, function: LambdaFunction) -> Any:
        module_file, handler_name = function.handler.rsplit(".", 1)
        with self._lock:
            module = self._modules.get(function.code_sha_256)
            if module is None:
                module = self._import(function, module_file)
                self._modules[function.code_sha_256] = module
            os.environ.update({k: str(v) for k, v in function.environment_vars.items()})
        return getattr(module, handler_name)

    def _import(self, function: LambdaFunction, module_file: str) -> Any:
        code_dir = self.directory / function.code_sha_256.replace("/", "_")
        with zipfile.ZipFile(io.BytesIO(function.code_bytes)) as archive:
            archive.extractall(code_dir)
        module_name = f"lambda_{len(self._modules)}_{module_file}"
        spec = importlib.util.spec_from_file_location(module_name, code_dir / f"{module_file}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        return module

    def invoke(self, function: LambdaFunction, event: Any) -> tuple[str, bool, str]:
        if isinstance(event, str):
            event = json.loads(event)
        handler = self.handler(function)
        try:
            result = handler(event, None)
        except Exception as error:  # the Lambda runtime turns any exception into this payload
            self.calls.append(Invocation(function.function_name, event, type(error).__name__))
            payload = {
                "errorMessage": str(error),
                "errorType": type(error).__name__,
                "stackTrace": traceback.format_tb(error.__traceback__),
            }
            return json.dumps(payload), True, ""
        self.calls.append(Invocation(function.function_name, event, None))
        return json.dumps(result), False, ""

    def calls_of(self, suffix: str) -> list[Invocation]:
        return [call for call in self.calls if call.function_name.endswith(suffix)]


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def normalise_aws_sdk_parameters(
    self: Any,
    parameters: dict[str, Any],
    boto_service_name: str | None = None,
    service_action_name: str | None = None,
) -> None:
    """Give an aws-sdk task's Parameters boto3's member names and types.

    AWS spells them as the SDK does (``Topic``, ``Qos``, ``Payload`` as an
    object); boto3's iot-data wants ``topic``, ``qos`` and ``payload`` bytes.
    moto has the conversion (``_to_boto_request``) but does not call it for
    aws-sdk tasks.
    """
    service = get_session().get_service_model(self._get_boto_service_name(boto_service_name))
    action = self._get_boto_service_action(service_action_name)
    operations = {xform_name(name): name for name in service.operation_names}
    operation = service.operation_model(operations[action])
    self._to_boto_request(parameters, operation.input_shape)


@pytest.fixture
def local_lambdas(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, aws_env: None
) -> Iterator[LocalLambdas]:
    lambdas = LocalLambdas(tmp_path / "lambda")
    saved_environ = dict(os.environ)

    def invoke(self: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
        return lambdas.invoke(self, {} if event is None else event)

    monkeypatch.setattr(LambdaFunction, "_invoke_lambda", invoke)
    # AWS names the IoT data plane "iotdataplane" in aws-sdk integrations; boto3, "iot-data".
    overrides = state_task_service.StateTaskService._SERVICE_NAME_SFN_TO_BOTO_OVERRIDES
    monkeypatch.setitem(overrides, "iotdataplane", "iot-data")
    monkeypatch.setattr(
        state_task_service_aws_sdk.StateTaskServiceAwsSdk,
        "_normalise_parameters",
        normalise_aws_sdk_parameters,
    )
    yield lambdas
    os.environ.clear()
    os.environ.update(saved_environ)


@dataclass
class Stack:
    outputs: dict[str, str]
    lambdas: LocalLambdas

    @property
    def sfn(self) -> Any:
        return boto3.client("stepfunctions", region_name=REGION)

    def start(self, machine: str, name: str, payload: dict[str, Any]) -> str:
        arn = self.outputs[f"{machine}StateMachineArn"]
        response = self.sfn.start_execution(
            stateMachineArn=arn, name=name, input=json.dumps(payload)
        )
        return response["executionArn"]

    def wait(self, execution_arn: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            description = self.sfn.describe_execution(executionArn=execution_arn)
            if description["status"] != "RUNNING":
                return description
            if time.monotonic() > deadline:
                raise AssertionError(f"{execution_arn} still RUNNING after {timeout} s")
            time.sleep(0.05)

    def run(self, machine: str, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self.wait(self.start(machine, name, payload))

    def published(self) -> list[tuple[str, dict[str, Any]]]:
        """Every IoT publish so far, as (topic, payload object)."""
        backend = iotdata_backends[DEFAULT_ACCOUNT_ID][REGION]
        return [(topic, json.loads(payload)) for topic, payload in backend.published_payloads]

    def notification(self, name: str) -> tuple[str, dict[str, Any]]:
        """The one completion notification of the execution called ``name``."""
        found = [(t, p) for t, p in self.published() if p.get("txnId") == name]
        assert len(found) == 1, f"expected one notification for {name}, got {found}"
        return found[0]


def load_function_module(group: str) -> Any:
    """Import statemachines/functions/<group>/app.py (every group's module is called app)."""
    path = source_dir() / "functions" / group / "app.py"
    spec = importlib.util.spec_from_file_location(f"statemachines_functions_{group}_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def make_executable(account: str, region: str) -> None:
    """Hand the state machines CloudFormation created to the backend that executes them.

    With ``execute_state_machine`` moto serves the Step Functions API from a
    second backend, while its CloudFormation creates state machines in the
    first one, where the API no longer finds them.
    """
    executing = stepfunctions_parser_backends[account][region]
    for machine in stepfunctions_backends[account][region].state_machines:
        executing.create_state_machine(
            name=machine.name, definition=machine.definition, roleArn=machine.roleArn
        )


@pytest.fixture
def stack(local_lambdas: LocalLambdas) -> Iterator[Stack]:
    """The packaged template deployed into moto, with executing state machines."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        packaged, artifacts = package_template(load_template(), source_dir(), ARTIFACTS_BUCKET)
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=ARTIFACTS_BUCKET)
        for key, data in artifacts.items():
            s3.put_object(Bucket=ARTIFACTS_BUCKET, Key=key, Body=data)
        cloudformation = boto3.client("cloudformation", region_name=REGION)
        cloudformation.create_stack(
            StackName="notifier-test",
            TemplateBody=json.dumps(packaged),
            Parameters=[{"ParameterKey": "TopicRoot", "ParameterValue": TOPIC_ROOT}],
            Capabilities=["CAPABILITY_IAM"],
        )
        description = cloudformation.describe_stacks(StackName="notifier-test")["Stacks"][0]
        assert description["StackStatus"] == "CREATE_COMPLETE", description
        outputs = {o["OutputKey"]: o["OutputValue"] for o in description.get("Outputs", [])}
        make_executable(DEFAULT_ACCOUNT_ID, REGION)
        yield Stack(outputs, local_lambdas)
