"""A TLS server's side for tests: a certificate for 127.0.0.1 from a fresh local CA."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from notifier.local.certificates import LocalCertificateAuthority


@dataclass(frozen=True)
class LoopbackTls:
    served: ssl.SSLContext
    """For the server: its certificate and key."""
    ca_file: Path
    """The CA that signed it, which no system trusts."""


def loopback_tls(directory: Path) -> LoopbackTls:
    authority = LocalCertificateAuthority(directory)
    authority.ensure()
    pair = authority.server_certificate(["127.0.0.1"], name="endpoint")
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(pair.cert_file, pair.key_file)
    return LoopbackTls(served, authority.ca_file)
