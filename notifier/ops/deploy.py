"""Create or update the notifier CloudFormation stack: the same calls for AWS and local."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, cast

from botocore.exceptions import ClientError

from notifier.aws.clients import AwsClients, error_code

if TYPE_CHECKING:
    from types_aiobotocore_cloudformation import CloudFormationClient
    from types_aiobotocore_cloudformation.literals import CapabilityType
    from types_aiobotocore_cloudformation.type_defs import ParameterTypeDef
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.literals import BucketLocationConstraintType
    from types_aiobotocore_s3.type_defs import CreateBucketRequestTypeDef

log = logging.getLogger("notifier.ops.deploy")

TERMINAL_OK = {"CREATE_COMPLETE", "UPDATE_COMPLETE"}
POLL_SECONDS = 2.0


class DeployError(Exception):
    pass


class StackRequest(TypedDict):
    """What CreateStack and UpdateStack are both given."""

    StackName: str
    TemplateBody: str
    Parameters: list[ParameterTypeDef]
    Capabilities: list[CapabilityType]


async def ensure_bucket(s3: S3Client, bucket: str, region: str | None) -> None:
    params: CreateBucketRequestTypeDef = {"Bucket": bucket}
    if region and region != "us-east-1":
        # Any region S3 has: the stubs' list is of the regions there were when they were made.
        location = cast("BucketLocationConstraintType", region)
        params["CreateBucketConfiguration"] = {"LocationConstraint": location}
    try:
        await s3.create_bucket(**params)
    except ClientError as exc:
        if error_code(exc) != "BucketAlreadyOwnedByYou":
            raise


async def default_artifacts_bucket(aws: AwsClients, stack_name: str) -> str:
    """``<stack>-artifacts-<account>-<region>``: bucket names are global, so made unique."""
    async with aws.client("sts") as sts:
        account = (await sts.get_caller_identity())["Account"]
    async with aws.client("s3") as s3:
        region = s3.meta.region_name
    return f"{stack_name}-artifacts-{account}-{region}".lower()


async def deploy_stack(
    aws: AwsClients,
    stack_name: str,
    parameters: dict[str, str],
    artifacts_bucket: str,
    template_path: Path | None = None,
) -> dict[str, str]:
    """Package the template, upload its artifacts, create or update the stack, wait for it,
    and return its outputs."""
    from notifier.ops.package import load_template, package_template

    template = load_template(template_path)
    base_dir = (template_path or _default_template_path()).parent
    packaged, artifacts = package_template(template, base_dir, artifacts_bucket)
    async with aws.client("s3") as s3:
        await ensure_bucket(s3, artifacts_bucket, aws.settings.region)
        await asyncio.gather(
            *(
                s3.put_object(Bucket=artifacts_bucket, Key=key, Body=body)
                for key, body in artifacts.items()
            )
        )
    async with aws.client("cloudformation") as cfn:
        request: StackRequest = {
            "StackName": stack_name,
            "TemplateBody": json.dumps(packaged),
            "Parameters": [
                {"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()
            ],
            "Capabilities": ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
        }
        if await _stack_exists(cfn, stack_name):
            try:
                await cfn.update_stack(**request)
            except ClientError as exc:
                if "No updates are to be performed" not in str(exc):
                    raise
        else:
            await cfn.create_stack(**request)
        return await _wait_for_stack(cfn, stack_name)


def _default_template_path() -> Path:
    from importlib.resources import files

    return Path(str(files("statemachines") / "template.yaml"))


async def _stack_exists(cfn: CloudFormationClient, stack_name: str) -> bool:
    try:
        stacks = (await cfn.describe_stacks(StackName=stack_name))["Stacks"]
    except ClientError as exc:
        if "does not exist" in str(exc):
            return False
        raise
    return bool(stacks) and stacks[0]["StackStatus"] != "DELETE_COMPLETE"


async def _wait_for_stack(cfn: CloudFormationClient, stack_name: str) -> dict[str, str]:
    while True:
        stack = (await cfn.describe_stacks(StackName=stack_name))["Stacks"][0]
        status = stack["StackStatus"]
        if status in TERMINAL_OK:
            return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        if not status.endswith("_IN_PROGRESS"):
            reason = stack.get("StackStatusReason", "")
            raise DeployError(f"stack {stack_name} ended {status}: {reason}".rstrip(": "))
        await asyncio.sleep(POLL_SECONDS)
