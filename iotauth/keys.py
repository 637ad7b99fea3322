"""The signing keys, from one Secrets Manager secret: its AWSCURRENT version signs, and its
AWSPREVIOUS version still verifies, so tokens issued just before a rotation stay valid.

Rotate with ``aws secretsmanager put-secret-value --secret-id <SigningSecretArn>
--secret-string <new random key>``: Secrets Manager moves AWSPREVIOUS to the old version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from iotauth.tokens import key_id

CACHE_SECONDS = 300.0
"""How long a warm Lambda keeps the keys before reading the secret again."""
UNKNOWN_KEY_RELOAD_SECONDS = 10.0
"""A token signed with a key we do not know reloads the keys, at most this often."""


@dataclass(frozen=True)
class KeyRing:
    current: bytes
    previous: bytes | None = None
    loaded_at: float = field(default_factory=time.monotonic)

    @property
    def by_id(self) -> dict[str, bytes]:
        keys = {key_id(self.current): self.current}
        if self.previous:
            keys[key_id(self.previous)] = self.previous
        return keys


class SecretsManagerKeys:
    """Reads the key ring from Secrets Manager, cached for the life of a warm Lambda."""

    def __init__(self, secret_id: str, client: Any = None) -> None:
        self.secret_id = secret_id
        self._client = client
        self._ring: KeyRing | None = None

    def ring(self) -> KeyRing:
        if self._ring is None or time.monotonic() - self._ring.loaded_at > CACHE_SECONDS:
            self._ring = self._load()
        return self._ring

    def ring_knowing(self, kid: object) -> KeyRing:
        """The key ring, reloaded first if it does not know ``kid`` (a key rotated meanwhile)."""
        ring = self.ring()
        stale = time.monotonic() - ring.loaded_at > UNKNOWN_KEY_RELOAD_SECONDS
        if isinstance(kid, str) and kid not in ring.by_id and stale:
            self._ring = ring = self._load()
        return ring

    def _load(self) -> KeyRing:
        current = self._version("AWSCURRENT")
        if current is None:
            raise RuntimeError(f"secret {self.secret_id} has no current value")
        return KeyRing(current, self._version("AWSPREVIOUS"))

    def _version(self, stage: str) -> bytes | None:
        client = self._client
        if client is None:
            import boto3  # in the Lambda runtime; imported here so tests need no AWS

            client = self._client = boto3.client("secretsmanager")
        try:
            value = client.get_secret_value(SecretId=self.secret_id, VersionStage=stage)
        except client.exceptions.ResourceNotFoundException:
            return None
        secret = value.get("SecretString")
        return secret.encode() if secret else None
