"""A taken port, as ``notifier local`` reports it: at once, before anything starts, naming the
option to change; and, for a port taken after that check, by the part that cannot listen on it,
in the same words."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from notifier.aws.clients import AwsClients
from notifier.config import AwsSettings
from notifier.local.broker import LocalBroker
from notifier.local.certificates import LocalCertificateAuthority
from notifier.local.ports import CannotListenError, Listener, PortInUseError, check_free
from notifier.local.quotas import QuotaSettings
from notifier.local.sigv4 import SigV4Verifier
from notifier.local.stack import AwsEndpointProcess
from notifier.local.token_api import LocalTokenApi
from tests.sources.test_mqtt import access_control


@pytest.fixture
def taken() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.create_server(("127.0.0.1", 0)) as listening:
        yield listening.getsockname()[1]


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port: int = listening.getsockname()[1]
    return port


def test_a_taken_port_is_named_by_its_option(taken: int) -> None:
    with pytest.raises(PortInUseError) as refused:
        check_free(
            [
                Listener("AWS endpoint", "--aws-port", "127.0.0.1", 0),
                Listener("MQTT broker", "--mqtt-tls-port", "127.0.0.1", taken),
            ]
        )
    assert str(refused.value) == (
        f"MQTT broker: 127.0.0.1:{taken} is already in use (choose another with --mqtt-tls-port)"
    )


def test_free_ports_are_free_again_after_the_check() -> None:
    ports = [free_port(), free_port()]
    check_free(Listener("token issuer", f"--port-{p}", "127.0.0.1", p) for p in ports)
    for port in ports:
        with socket.create_server(("127.0.0.1", port)):
            pass


def test_a_port_given_to_two_options_is_taken_for_the_second() -> None:
    port = free_port()
    with pytest.raises(PortInUseError) as refused:
        check_free(
            [
                Listener("MQTT broker", "--mqtt-port", "127.0.0.1", port),
                Listener("token issuer", "--issuer-port", "127.0.0.1", port),
            ]
        )
    assert refused.value.option == "--issuer-port"


def test_a_port_that_cannot_be_listened_on_says_why() -> None:
    # 192.0.2.0/24 is for documentation: no address of this machine.
    with pytest.raises(CannotListenError) as refused:
        check_free([Listener("daemon HTTP", "--http-port", "192.0.2.1", 3000)])
    message = str(refused.value)
    assert message.startswith("daemon HTTP: cannot listen on 192.0.2.1:3000 (--http-port): ")
    assert "in use" not in message


@pytest.mark.parametrize("option", ["--mqtt-port", "--mqtt-tls-port", "--mqtt-wss-port"])
async def test_a_broker_port_taken_after_the_check(option: str, taken: int, tmp_path: Path) -> None:
    ports = {"--mqtt-port": 0, "--mqtt-tls-port": 0, "--mqtt-wss-port": 0, option: taken}
    authority = LocalCertificateAuthority(tmp_path)
    authority.ensure()
    broker = LocalBroker(
        "127.0.0.1",
        ports["--mqtt-port"],
        access_control(),
        tls=authority.server_certificate(["127.0.0.1"]),
        ca_file=str(authority.ca_file),
        tls_port=ports["--mqtt-tls-port"],
        wss_port=ports["--mqtt-wss-port"],
    )
    with pytest.raises(PortInUseError) as refused:
        await broker.start()
    await broker.stop()
    assert str(refused.value) == (
        f"MQTT broker: 127.0.0.1:{taken} is already in use (choose another with {option})"
    )


async def test_an_aws_endpoint_port_taken_after_the_check(taken: int) -> None:
    endpoint = AwsEndpointProcess(
        "127.0.0.1", taken, "127.0.0.1", 1883, "WARNING", "unused", QuotaSettings()
    )
    with pytest.raises(PortInUseError) as refused:
        await endpoint.start()
    assert str(refused.value) == (
        f"AWS endpoint: 127.0.0.1:{taken} is already in use (choose another with --aws-port)"
    )


async def test_a_token_issuer_port_taken_after_the_check(taken: int) -> None:
    aws = AwsClients(AwsSettings(region="us-east-1", endpoint_url="http://127.0.0.1:9"))
    signatures = SigV4Verifier("local", "local", "us-east-1")
    token_api = LocalTokenApi("127.0.0.1", taken, signatures, aws, "unused", "local")
    with pytest.raises(PortInUseError) as refused:
        await token_api.start()
    assert str(refused.value) == (
        f"token issuer: 127.0.0.1:{taken} is already in use (choose another with --issuer-port)"
    )
