"""Stands in for what moto's CloudFormation does not do for the notifier template.

moto logs "No Moto CloudFormation support" and moves on for some types the stack needs
locally, above all SNS subscriptions (without them nothing reaches the queues subscribed to
a topic), the queue and topic policies that say who may send to them, the token signing
secret and the IoT custom authorizer. These models
teach moto's CloudFormation those types, so the resources are created from the template
itself, by the same CreateStack/UpdateStack call used for AWS.

AWS::S3::BucketPolicy stays skipped on purpose: moto evaluates bucket policies without their
conditions, so the template's TLS-only statement (deny when aws:SecureTransport is false)
would deny every request, and the local endpoint speaks plain HTTP on loopback anyway.
AWS::CloudWatch::Alarm stays skipped too: nothing publishes CloudWatch metrics locally.

moto's CloudFormation also creates state machines in its plain Step Functions backend,
while the API serves the executing one; stacks are pointed at the executing backend.
"""

from __future__ import annotations

import json
import secrets
import string
from typing import Any

from moto.core.common_models import CloudFormationModel


class _TemplateResource:
    """A resource moto has no model for, created by calling moto's backends.

    Subclasses say how in ``create`` (returning the physical id) and, if it matters,
    ``delete``; moto's CloudFormation calls the classmethods below.
    """

    def __init__(self, physical_resource_id: str) -> None:
        self.physical_resource_id = physical_resource_id

    @classmethod
    def create(cls, properties: dict[str, Any], account_id: str, region: str, name: str) -> str:
        raise NotImplementedError

    @classmethod
    def delete(cls, physical_id: str, account_id: str, region: str) -> None:
        return None

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return False

    def is_created(self) -> bool:
        return True

    def get_cfn_attribute(self, attribute_name: str) -> Any:
        raise NotImplementedError(attribute_name)

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str,
        **kwargs: Any,
    ) -> Any:  # fmt: skip
        properties = cloudformation_json["Properties"]
        return cls(cls.create(properties, account_id, region_name, resource_name))

    @classmethod
    def update_from_cloudformation_json(
        cls, original_resource: Any, new_resource_name: str, cloudformation_json: Any,
        account_id: str, region_name: str,
    ) -> Any:  # fmt: skip
        cls.delete(original_resource.physical_resource_id, account_id, region_name)
        return cls.create_from_cloudformation_json(
            new_resource_name, cloudformation_json, account_id, region_name
        )

    @classmethod
    def delete_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        cls.delete(resource_name, account_id, region_name)


class SnsSubscription(_TemplateResource, CloudFormationModel):
    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::SNS::Subscription"

    @classmethod
    def create(cls, properties: dict[str, Any], account_id: str, region: str, name: str) -> str:
        from moto.sns.models import sns_backends

        backend = sns_backends[account_id][region]
        subscription = backend.subscribe(
            properties["TopicArn"], properties["Endpoint"], properties["Protocol"]
        )
        # The scope first: moto validates a filter policy against the scope already set.
        for attribute in (
            "FilterPolicyScope",
            "FilterPolicy",
            "RawMessageDelivery",
            "RedrivePolicy",
        ):
            if attribute in properties:
                value = properties[attribute]
                if isinstance(value, dict):
                    value = json.dumps(value)
                elif isinstance(value, bool):
                    value = str(value).lower()
                backend.set_subscription_attributes(subscription.arn, attribute, value)
        return str(subscription.arn)

    @classmethod
    def delete(cls, physical_id: str, account_id: str, region: str) -> None:
        from moto.sns.models import sns_backends

        sns_backends[account_id][region].unsubscribe(physical_id)


class SqsQueuePolicy(_TemplateResource, CloudFormationModel):
    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::SQS::QueuePolicy"

    @classmethod
    def create(cls, properties: dict[str, Any], account_id: str, region: str, name: str) -> str:
        from moto.sqs.models import sqs_backends

        policy = json.dumps(properties["PolicyDocument"])
        for queue_url in properties["Queues"]:
            queue_name = queue_url.rstrip("/").rsplit("/", 1)[-1]
            sqs_backends[account_id][region].set_queue_attributes(queue_name, {"Policy": policy})
        return name


class SnsTopicPolicy(_TemplateResource, CloudFormationModel):
    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::SNS::TopicPolicy"

    @classmethod
    def create(cls, properties: dict[str, Any], account_id: str, region: str, name: str) -> str:
        from moto.sns.models import sns_backends

        policy = json.dumps(properties["PolicyDocument"])
        for topic_arn in properties["Topics"]:
            sns_backends[account_id][region].set_topic_attribute(topic_arn, "policy", policy)
        return name


class SecretsManagerSecret(_TemplateResource, CloudFormationModel):
    """A secret with its ``SecretString``, or one generated as ``GenerateSecretString`` asks."""

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::SecretsManager::Secret"

    @classmethod
    def create(cls, properties: dict[str, Any], account_id: str, region: str, name: str) -> str:
        from moto.secretsmanager.models import secretsmanager_backends

        value = properties.get("SecretString")
        if value is None:
            value = generate_secret_string(properties.get("GenerateSecretString", {}))
        created = secretsmanager_backends[account_id][region].create_secret(
            name=properties.get("Name", name),
            secret_string=value,
            secret_binary=None,
            description=properties.get("Description"),
            tags=properties.get("Tags"),
            kms_key_id=properties.get("KmsKeyId"),
            client_request_token=None,
            replica_regions=[],
            force_overwrite=False,
        )
        return str(json.loads(created)["ARN"])  # Ref of a secret is its ARN

    @classmethod
    def delete(cls, physical_id: str, account_id: str, region: str) -> None:
        from moto.secretsmanager.models import secretsmanager_backends

        secretsmanager_backends[account_id][region].delete_secret(
            physical_id, recovery_window_in_days=None, force_delete_without_recovery=True
        )


def generate_secret_string(spec: dict[str, Any]) -> str:
    """A random password as GenerateSecretString describes it (length and excluded classes);
    with ``SecretStringTemplate``, the JSON object with it under ``GenerateStringKey``."""
    alphabet = string.ascii_letters + string.digits
    if not _true(spec.get("ExcludePunctuation")):
        alphabet += string.punctuation
    alphabet = "".join(c for c in alphabet if c not in spec.get("ExcludeCharacters", ""))
    password = "".join(secrets.choice(alphabet) for _ in range(int(spec.get("PasswordLength", 32))))
    if "SecretStringTemplate" not in spec:
        return password
    document = json.loads(spec["SecretStringTemplate"])
    document[spec["GenerateStringKey"]] = password
    return json.dumps(document)


def _true(value: Any) -> bool:
    return str(value).lower() == "true"


class IotAuthorizer(_TemplateResource, CloudFormationModel):
    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::IoT::Authorizer"

    @classmethod
    def create(cls, properties: dict[str, Any], account_id: str, region: str, name: str) -> str:
        from notifier.local import iot_authorizers

        return iot_authorizers.register(account_id, region, properties).name

    @classmethod
    def delete(cls, physical_id: str, account_id: str, region: str) -> None:
        from notifier.local import iot_authorizers

        iot_authorizers.remove(account_id, region, physical_id)

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr == "Arn"

    def get_cfn_attribute(self, attribute_name: str) -> Any:
        from notifier.local import iot_authorizers

        if attribute_name != "Arn":
            raise NotImplementedError(attribute_name)
        return iot_authorizers.arn_of(self.physical_resource_id)


def keep_dead_letter_configs() -> None:
    """moto's CloudFormation drops a Lambda function's ``DeadLetterConfig``: keep it on the
    function, where the asynchronous invocations of eventbridge_targets look for it."""
    from moto.awslambda.models import LambdaFunction

    create = LambdaFunction.create_from_cloudformation_json
    update = LambdaFunction.update_from_cloudformation_json
    if getattr(create, "keeps_dead_letter_config", False):
        return

    def created(cls: Any, /, name: str, template: Any, account: str, region: str, **kw: Any) -> Any:
        function = create(name, template, account, region, **kw)
        function.dead_letter_config = template["Properties"].get("DeadLetterConfig")  # type: ignore[attr-defined]  # beside moto's own
        return function

    def updated(cls: Any, /, original: Any, name: str, template: Any, *args: Any) -> Any:
        function = update(original, name, template, *args)
        function.dead_letter_config = template["Properties"].get("DeadLetterConfig")  # type: ignore[attr-defined]  # beside moto's own
        return function

    created.keeps_dead_letter_config = True  # type: ignore[attr-defined]  # a marker
    LambdaFunction.create_from_cloudformation_json = classmethod(created)  # type: ignore[assignment,method-assign]  # moto patched
    LambdaFunction.update_from_cloudformation_json = classmethod(updated)  # type: ignore[assignment,method-assign]  # moto patched


def install() -> None:
    """Make moto's CloudFormation see the models above (it caches its type map on first use),
    keep functions' dead-letter queues, and create state machines where the Step Functions
    API will look for them."""
    from moto.cloudformation import parsing
    from moto.stepfunctions import models as sfn_models
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    sfn_models.stepfunctions_backends = stepfunctions_parser_backends  # type: ignore[assignment]  # the parser's

    keep_dead_letter_configs()
    for cached in (parsing.get_model_list, parsing.get_model_map, parsing.get_name_type_map):
        cached.cache_clear()
    known = parsing.get_model_map()
    for model in (SnsSubscription, SqsQueuePolicy, SnsTopicPolicy, SecretsManagerSecret,
                  IotAuthorizer):  # fmt: skip
        assert known[model.cloudformation_type()] is model
