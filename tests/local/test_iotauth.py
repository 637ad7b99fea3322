"""iotauth on the local stack: the template's secret, authorizer and Lambdas, and the broker."""

from __future__ import annotations

import base64
import json
from typing import Any

from notifier.local.stack import LocalStack


async def invoke(stack: LocalStack, function: str, event: dict[str, Any]) -> Any:
    async with stack.aws().client("lambda") as awslambda:
        response = await awslambda.invoke(FunctionName=function, Payload=json.dumps(event))
        return json.loads(await response["Payload"].read())


async def test_the_template_creates_the_secret_and_the_authorizer(local_stack: LocalStack) -> None:
    outputs = local_stack.outputs
    async with local_stack.aws().client("secretsmanager") as secrets:
        value = await secrets.get_secret_value(SecretId=outputs["SigningSecretArn"])
    assert len(value["SecretString"]) == 64 and value["SecretString"].isalnum()
    async with local_stack.aws().client("iot") as iot:
        described = await iot.describe_authorizer(authorizerName=outputs["TokenAuthorizerName"])
    authorizer = described["authorizerDescription"]
    assert authorizer["status"] == "ACTIVE" and authorizer["signingDisabled"] is True
    assert authorizer["authorizerFunctionArn"] == outputs["TokenAuthorizerFunctionArn"]


async def test_deployed_issuer_and_authorizer_agree(local_stack: LocalStack) -> None:
    outputs = local_stack.outputs
    proxy_event = {
        "resource": "/tokens/daemon/{subtopic}",
        "path": "/tokens/daemon/bridge-test",
        "httpMethod": "POST",
        "pathParameters": {"subtopic": "bridge-test"},
    }
    issued = await invoke(local_stack, outputs["TokenIssuerFunctionArn"], proxy_event)
    assert issued["statusCode"] == 200
    token = json.loads(issued["body"])
    assert token["topicFilters"] == [f"{local_stack.settings.topic_root}/bridge-test/#"]
    assert token["authorizerName"] == outputs["TokenAuthorizerName"]
    endpoint = (local_stack.settings.host, local_stack.broker.port)
    assert (token["endpoint"], token["port"]) == endpoint

    password = base64.b64encode(token["token"].encode()).decode()
    connect = {
        "signatureVerified": False,
        "protocols": ["mqtt"],
        "protocolData": {"mqtt": {"username": "u", "password": password, "clientId": "x"}},
        "connectionMetadata": {"id": "1"},
    }
    wrong_client = await invoke(local_stack, outputs["TokenAuthorizerFunctionArn"], connect)
    assert wrong_client["isAuthenticated"] is False
    connect["protocolData"]["mqtt"]["clientId"] = token["clientId"]
    allowed = await invoke(local_stack, outputs["TokenAuthorizerFunctionArn"], connect)
    assert allowed["isAuthenticated"] is True
    assert f"client/{token['clientId']}" in allowed["policyDocuments"][0]
