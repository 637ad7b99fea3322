"""The local stack's CA: made once per working directory, and certificates that TLS accepts."""

from __future__ import annotations

import asyncio
import ssl
import stat
from pathlib import Path

import pytest

from notifier.local.certificates import LocalCertificateAuthority


def test_the_ca_is_made_once_and_reused(tmp_path: Path) -> None:
    first = LocalCertificateAuthority(tmp_path / "stack")
    first.ensure()
    ca = first.ca_file.read_bytes()
    assert stat.S_IMODE((tmp_path / "stack" / "ca.key").stat().st_mode) == 0o600
    again = LocalCertificateAuthority(tmp_path / "stack")
    again.ensure()
    assert again.ca_file.read_bytes() == ca  # a client pointed at ca.pem keeps trusting it
    (tmp_path / "stack" / "ca.key").write_text("not a key")
    again.ensure()
    assert again.ca_file.read_bytes() != ca  # a broken CA is replaced


async def test_server_and_device_certificates_verify_with_the_ca(tmp_path: Path) -> None:
    authority = LocalCertificateAuthority(tmp_path)
    authority.ensure()
    server = authority.server_certificate(["127.0.0.1", "localhost"])
    device = authority.device_certificate("device-1")

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=authority.ca_file)
    context.load_cert_chain(server.cert_file, server.key_file)
    context.verify_mode = ssl.CERT_REQUIRED
    peers: list[object] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peercert"))
        writer.close()

    listening = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = listening.sockets[0].getsockname()[1]
    client = ssl.create_default_context(cafile=authority.ca_file)
    client.load_cert_chain(device.cert_file, device.key_file)
    async with listening:
        for name in ("127.0.0.1", "localhost"):
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client, server_hostname=name
            )
            writer.close()
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="other")
    subjects = [dict(item[0] for item in peer["subject"]) for peer in peers]  # type: ignore[index]
    assert subjects == [{"commonName": "device-1"}] * 2
