"""Stands in for the AWS IoT Core data plane: publishes reach the local MQTT broker.

moto's iot-data backend only records what is published, and moto's Step Functions
interpreter does not know the service name AWS uses in `aws-sdk:iotdataplane:publish`
(boto3 calls it ``iot-data``), nor that Step Functions spells that API's lower-case members
``Topic``, ``Qos`` and ``Payload``. This bridge teaches it both and forwards every publish
(from the API or from a state machine) to the broker over a real MQTT connection, waiting
for the broker's PUBACK. While that connection is down (the broker stopped, or not back yet)
a publish fails at once, as it would in AWS during an outage, rather than wait in the
client's queue and reach the broker after it was reported failed; one in flight when the
connection is lost fails then. On a live connection a slow PUBACK (a busy machine) is
waited for: failing it would report a publish failed that the broker then delivers.
It is the one client the broker lets publish, with a password the stack gives both.
A payload over IoT Core's limit is refused with its ``RequestEntityTooLargeException``, a
topic with a wildcard with its ``InvalidRequestException`` (HTTP 400, which no SDK retries).
"""

from __future__ import annotations

import functools
import logging
import threading
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

import botocore.session
from awscrt import io, mqtt

from notifier.local.settings import PUBLISHER_CLIENT_ID
from notifier.local.throttling import QuotaEvents

log = logging.getLogger("notifier.local.iot_core")

CONNACK_TIMEOUT_MS = 10_000
"""How long the client waits for CONNACK (and each PINGRESP): its default, 3 s, is less than
the local broker, on an event loop the stack shares, may take to answer a CONNECT; with it
the publisher failed to connect, and to reconnect after a restart, for as long as that lasted."""
CONNECT_TIMEOUT_SECONDS = 20.0
"""Longer than the client itself takes to give a connect up (its TCP connect, 5 s, then the
CONNACK), so that no attempt is left running behind a publish that failed."""
PUBACK_TIMEOUT_SECONDS = 30.0
"""How long a publish may wait for its PUBACK while the connection stays up: the broker is
there, only slow (a busy machine); the bound is for one that hangs."""


class BrokerPublisher:
    """One MQTT connection, shared by all threads of the AWS endpoint, publishing at QoS 1."""

    def __init__(self, host: str, port: int, password: str) -> None:
        self._connection = mqtt.Connection(
            client=mqtt.Client(io.ClientBootstrap.get_or_create_static_default()),
            host_name=host,
            port=port,
            client_id=PUBLISHER_CLIENT_ID,
            username=PUBLISHER_CLIENT_ID,
            password=password,
            clean_session=True,
            keep_alive_secs=30,
            ping_timeout_ms=CONNACK_TIMEOUT_MS,
            reconnect_min_timeout_secs=1,
            reconnect_max_timeout_secs=5,
            on_connection_interrupted=self._interrupted,
            on_connection_resumed=self._resumed,
            disable_metrics=True,
        )
        self._started = False
        """Connected once: from then on the client reconnects by itself."""
        self._down: Future[None] = Future()
        """Done once the current connection is lost; a new one after each reconnect."""
        self._connect_lock = threading.Lock()
        self._state_lock = threading.Lock()

    def publish(self, topic: str, payload: bytes) -> None:
        with self._connect_lock:
            if not self._started:
                self._connection.connect().result(CONNECT_TIMEOUT_SECONDS)
                self._started = True
        with self._state_lock:
            down = self._down
        if down.done():
            raise ConnectionError("the connection to the MQTT broker is down")
        acked, _packet_id = self._connection.publish(topic, payload, mqtt.QoS.AT_LEAST_ONCE)
        wait([acked, down], PUBACK_TIMEOUT_SECONDS, return_when=FIRST_COMPLETED)
        if acked.done():
            acked.result()
        elif down.done():
            raise ConnectionError("the connection to the MQTT broker was lost")
        else:
            raise TimeoutError(f"no PUBACK in {PUBACK_TIMEOUT_SECONDS:g} s")

    def close(self) -> None:
        if self._started:
            self._connection.disconnect().result(CONNECT_TIMEOUT_SECONDS)

    def _interrupted(self, connection: Any, error: Exception, **kwargs: Any) -> None:
        with self._state_lock:
            if not self._down.done():
                self._down.set_result(None)

    def _resumed(
        self, connection: Any, return_code: Any, session_present: bool, **kwargs: Any
    ) -> None:
        with self._state_lock:
            if self._down.done():
                self._down = Future()


@functools.cache
def _iot_data_input_shape(action: str) -> Any:
    """The input shape of the iot-data operation ``action`` (any case), loaded once."""
    service = botocore.session.get_session().get_service_model("iot-data")
    name = next(op for op in service.operation_names if op.lower() == action.lower())
    return service.operation_model(name).input_shape


def install(
    publisher: BrokerPublisher, payload_limit: int | None, events: QuotaEvents | None = None
) -> None:
    """Publishes (the API's and the state machines') go to the broker through ``publisher``;
    one with a payload over ``payload_limit`` bytes gets IoT Core's error instead, HTTP 413
    ``RequestEntityTooLargeException``, recorded in ``events``; one to a topic with a wildcard
    HTTP 400 ``InvalidRequestException``."""
    from moto.core.exceptions import JsonRESTError
    from moto.iotdata.models import IoTDataPlaneBackend
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service import (  # noqa: E501
        StateTaskService,
    )

    class ServiceUnavailable(JsonRESTError):
        code = 503

    class RequestEntityTooLarge(JsonRESTError):
        code = 413

    class InvalidRequest(JsonRESTError):
        code = 400

    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk import (  # noqa: E501
        StateTaskServiceAwsSdk,
    )

    StateTaskService._SERVICE_NAME_SFN_TO_BOTO_OVERRIDES["iotdataplane"] = "iot-data"
    original_normalise = StateTaskServiceAwsSdk._normalise_parameters

    def normalise_parameters(self: Any, parameters: dict[str, Any], *args: Any) -> None:
        if self.resource.api_name != "iotdataplane":
            original_normalise(self, parameters, *args)
            return
        self._to_boto_request(parameters, _iot_data_input_shape(self.resource.api_action))

    StateTaskServiceAwsSdk._normalise_parameters = normalise_parameters  # type: ignore[method-assign,assignment]  # moto patched

    def publish(self: Any, topic: str, payload: bytes) -> None:
        body = payload if isinstance(payload, bytes) else str(payload).encode()
        if payload_limit is not None and len(body) > payload_limit:
            if events is not None:
                events.record(
                    "iot_payload_refused",
                    f"IoT data plane publish of {len(body)} bytes to {topic} refused (the "
                    f"payload limit is {payload_limit} bytes)",
                )
            raise RequestEntityTooLarge(
                "RequestEntityTooLargeException",
                f"The payload exceeds the maximum size of {payload_limit} bytes",
            )
        if "+" in topic or "#" in topic:
            raise InvalidRequest("InvalidRequestException", f"{topic}: a wildcard in a topic name")
        try:
            publisher.publish(topic, body)
        except Exception as exc:
            log.warning("IoT publish to %s failed: %s", topic, exc)
            raise ServiceUnavailable(
                "ServiceUnavailableException", f"the MQTT broker did not accept the publish: {exc}"
            ) from exc

    IoTDataPlaneBackend.publish = publish  # type: ignore[method-assign]  # moto patched
