"""Who this daemon instance is when its configuration does not say: an id that outlives a restart.

The instance id names the daemon's MQTT subtopic and its completion queue. One generated at
each start would leave a queue and a subtopic behind at every restart; instead an instance
without ``[daemon] instance_id`` takes one derived from the machine's id and its HTTP port:
the same daemon on the same machine is the same instance after a restart, and finds its queue
again, while two daemons on one machine differ by their ports. The machine id is hashed, never
shown (systemd asks that it not be exposed). Only with port 0, which is another port at each
start, is the id random.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
from collections.abc import Sequence
from pathlib import Path

MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))


def machine_id(files: Sequence[Path] = MACHINE_ID_FILES) -> str:
    """The machine's id (systemd's, or D-Bus's), else its host name."""
    for path in files:
        try:
            if found := path.read_text(encoding="ascii").strip():
                return found
        except (OSError, UnicodeDecodeError):
            continue
    return socket.gethostname()


def derived_instance_id(port: int, machine: str | None = None) -> str | None:
    """The instance id of the daemon on ``port`` of this machine (or of ``machine``); None
    for port 0, which names no port."""
    if port == 0:
        return None
    digest = hashlib.sha256(f"notifier:{machine or machine_id()}:{port}".encode()).hexdigest()
    return f"notifier-{digest[:12]}"


def instance_id(configured: str | None, port: int) -> tuple[str, str]:
    """The instance id to use, and where it comes from (for the log)."""
    if configured is not None:
        return configured, "configured"
    if (derived := derived_instance_id(port)) is not None:
        return derived, f"derived from the machine id and port {port}"
    return f"notifier-{secrets.token_hex(6)}", "generated (port 0: new at each start)"
