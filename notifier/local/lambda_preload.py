"""What the server that forks Lambda workers loads once, for every worker to inherit.

Imported only by that server (see ``lambda_runtime``). A handler's first boto3 client costs
a fresh process about a tenth of a second of CPU, most of it reading and parsing the
service's model and endpoint rules; a burst of invocations that starts tens of workers at
once spent seconds on that. Here boto3's default session, the one ``boto3.client()`` uses,
loads the models of the services the stack's functions call, so that a worker forked from
this process creates its clients in a few milliseconds. Nothing about the function (its
environment, region or credentials) is read here: the session reads those when a client is
made, in the worker.
"""

from __future__ import annotations

import boto3

SERVICES = ("s3", "sqs", "sns", "iot", "iot-data", "stepfunctions", "dynamodb", "secretsmanager")
"""The services the stack's Lambda functions call; any other one loads in the worker."""
PLACEHOLDER_CREDENTIAL = "preload"
"""Access key id and secret of the clients made here, which make no call."""


def load_service_models() -> None:
    boto3.setup_default_session()
    assert boto3.DEFAULT_SESSION is not None
    placeholders = {
        "region_name": "us-east-1",
        "aws_access_key_id": PLACEHOLDER_CREDENTIAL,
        "aws_secret_access_key": PLACEHOLDER_CREDENTIAL,
    }
    for service in SERVICES:
        boto3.DEFAULT_SESSION.client(service, **placeholders)
    boto3.DEFAULT_SESSION.resource("dynamodb", **placeholders)


load_service_models()
