"""The local stack's certificate authority: a CA made for one stack in its working directory,
the broker's server certificate (valid for the loopback names it listens on), and device
certificates for clients, all PEM files beside each other.

AWS IoT Core presents a certificate of a public CA (Amazon Root CA 1), which clients already
trust; the local broker's CA is trusted by pointing a client at its file (``ca.pem``).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = timedelta(days=365)
LEAF_LIFETIME = timedelta(days=30)
RENEW_BEFORE = timedelta(days=1)
"""A CA that expires sooner than this is replaced."""


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, as PEM files."""

    cert_file: Path
    key_file: Path


class LocalCertificateAuthority:
    """``directory/ca.pem`` (with ``ca.key``), made once and reused while it is valid, so that a
    client pointed at ``ca.pem`` keeps trusting the broker across restarts of the stack."""

    def __init__(self, directory: Path, name: str = "notifier local stack") -> None:
        self.directory = directory
        self.name = name
        self.ca_file = directory / "ca.pem"
        self._ca_key_file = directory / "ca.key"
        self._certificate: x509.Certificate | None = None
        self._key: ec.EllipticCurvePrivateKey | None = None

    def ensure(self) -> None:
        """Load the CA from the directory, or make a new one there."""
        self.directory.mkdir(parents=True, exist_ok=True)
        loaded = self._load()
        if loaded is None:
            loaded = self._create()
        self._certificate, self._key = loaded

    def server_certificate(self, hosts: Iterable[str], name: str = "broker") -> KeyPair:
        """A new certificate for a TLS server reached as any of ``hosts`` (names or IPs)."""
        names: list[x509.GeneralName] = []
        for host in dict.fromkeys(hosts):
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        extensions: list[x509.ExtensionType] = [
            x509.SubjectAlternativeName(names),
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
        ]
        return self._issue(name, extensions)

    def device_certificate(self, name: str) -> KeyPair:
        """A new client certificate whose subject's common name is ``name``."""
        return self._issue(name, [x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])])

    def _issue(self, name: str, extensions: list[x509.ExtensionType]) -> KeyPair:
        if self._certificate is None or self._key is None:
            raise RuntimeError("the certificate authority is not loaded: call ensure() first")
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + LEAF_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        for extension in extensions:
            builder = builder.add_extension(extension, critical=False)
        certificate = builder.sign(self._key, hashes.SHA256())
        pair = KeyPair(self.directory / f"{name}.pem", self.directory / f"{name}.key")
        _write(pair.key_file, _private_pem(key), private=True)
        _write(pair.cert_file, certificate.public_bytes(serialization.Encoding.PEM))
        return pair

    def _load(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
        try:
            certificate = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
            key = serialization.load_pem_private_key(self._ca_key_file.read_bytes(), None)
        except (OSError, ValueError):
            return None
        fresh = certificate.not_valid_after_utc - datetime.now(UTC) > RENEW_BEFORE
        public = certificate.public_key()
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not fresh:
            return None
        if not isinstance(public, ec.EllipticCurvePublicKey):
            return None
        if key.public_key().public_numbers() != public.public_numbers():
            return None
        return certificate, key

    def _create(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )  # fmt: skip
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        _write(self._ca_key_file, _private_pem(key), private=True)
        _write(self.ca_file, certificate.public_bytes(serialization.Encoding.PEM))
        return certificate, key


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Replace ``path`` at once: a stack sharing the directory never reads half a file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    mode = 0o600 if private else 0o644
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    os.replace(partial, path)
