"""Whether a host name or address is this machine's loopback: what may be left less guarded
(no API keys, plain MQTT, a plain-HTTP token issuer) because nothing off the machine reaches it."""

from __future__ import annotations

import functools
import ipaddress

from yarl import URL

# Both are asked about every request's Host header, which is nearly always the same few
# names: remembered, up to this many, rather than parsed each time.
_REMEMBERED = 256


@functools.lru_cache(maxsize=_REMEMBERED)
def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (IPv6 with or without brackets)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=_REMEMBERED)
def host_name(host: str) -> str:
    """The name in a ``Host`` header, without its port; empty if it is not one."""
    try:
        return URL(f"//{host}").host or ""
    except ValueError:
        return ""
