"""The ports ``notifier local`` is told to listen on, checked before anything starts.

Starting the stack takes seconds (the broker, the AWS endpoint's process, the deployment), and
each part would find its port taken only when its turn comes. So every port given (``0``
picks a free one and needs no check) is first bound and listened on here, as its server will
do it, on every address of its host, then released: a taken one is reported at once, in the
words its server uses. One given to two options is reported under the second. A port taken
between this check and its server's start is still reported by that server.

Needs nothing of the local extra, so that the check comes before any of it is imported.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Iterable
from dataclasses import dataclass


class PortInUseError(Exception):
    def __init__(self, what: str, host: str, port: int, option: str) -> None:
        super().__init__(f"{what}: {host}:{port} is already in use (choose another with {option})")
        self.port = port
        self.option = option


class CannotListenError(Exception):
    """A port that cannot be listened on for another reason than being in use (a privileged
    port, a host without such an address)."""

    def __init__(self, what: str, host: str, port: int, option: str, reason: str) -> None:
        super().__init__(f"{what}: cannot listen on {host}:{port} ({option}): {reason}")


@dataclass(frozen=True)
class Listener:
    what: str
    """What listens there, e.g. ``MQTT broker``."""
    option: str
    """The command-line option that chose the port."""
    host: str
    port: int

    def listen(self) -> list[socket.socket]:
        """Sockets listening on the port, one for each address of the host."""
        try:
            return _listening(self.host, self.port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(self.what, self.host, self.port, self.option) from None
            reason = exc.strerror or str(exc)
            raise CannotListenError(self.what, self.host, self.port, self.option, reason) from None


def check_free(listeners: Iterable[Listener]) -> None:
    """Raise :class:`PortInUseError` (or :class:`CannotListenError`) for the first of
    ``listeners`` whose port, unless 0, cannot be listened on now."""
    with contextlib.ExitStack() as held:  # all held until all are checked
        for listener in listeners:
            if listener.port != 0:
                for sock in listener.listen():
                    held.enter_context(sock)


def _listening(host: str, port: int) -> list[socket.socket]:
    """Sockets listening on ``port`` at each address of ``host``, made as asyncio's servers
    make theirs (address reuse, IPv6 sockets for IPv6 only)."""
    addresses = socket.getaddrinfo(
        host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, protocol, _, address in dict.fromkeys(addresses):
            sock = socket.socket(family, kind, protocol)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen()
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
