"""Whether a host name or address is this machine's loopback: what may be left less guarded
(no API keys, plain MQTT, a plain-HTTP token issuer) because nothing off the machine reaches it."""

from __future__ import annotations

import ipaddress

from yarl import URL


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (IPv6 with or without brackets)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(host: str) -> str:
    """The name in a ``Host`` header, without its port; empty if it is not one."""
    try:
        return URL(f"//{host}").host or ""
    except ValueError:
        return ""
