"""A TCP link that can be cut: a proxy on loopback standing in for a network path.

Cut, it behaves as a firewall rule that rejects with TCP resets in both directions
(``iptables -j REJECT --reject-with tcp-reset`` on both chains): nothing crosses it, and
nobody is told until they send something. Every packet either end sends afterwards is
answered with a reset, which aborts that end's connection; an end that stays quiet keeps
its connection open and knows nothing. New connections are reset at once. Restored,
connections whose two ends both stayed quiet carry on as if nothing happened (as a TCP
connection survives a firewall rule removed in time), and new ones go through again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

from notifier.lifecycle import Service

CHUNK = 64 * 1024


def reset(writer: asyncio.StreamWriter) -> None:
    """Abort ``writer``'s connection with a TCP reset rather than a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class CuttableLink(Service):
    """Forwards ``host:port`` (``port`` 0: a free one, read after start) to the target."""

    def __init__(
        self, target_host: str, target_port: int, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.port = port
        self.is_cut = False
        self.resets = 0
        """Connection ends reset by the cut so far."""
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def cut(self) -> None:
        self.is_cut = True

    def restore(self) -> None:
        self.is_cut = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            self._reset(writer)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.target_host, self.target_port
            )
        except OSError:
            self._reset(writer)
            return
        for source, destination in ((reader, upstream_writer), (upstream_reader, writer)):
            sender = writer if source is reader else upstream_writer
            pump = asyncio.get_running_loop().create_task(
                self._pump(source, sender, destination), name="link-pump"
            )
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sender: asyncio.StreamWriter,
        destination: asyncio.StreamWriter,
    ) -> None:
        """Carry what ``sender``'s end sends (read from ``source``) to ``destination``."""
        try:
            while True:
                data = await source.read(CHUNK)
                if self.is_cut or (data and destination.transport.is_closing()):
                    # A packet into the cut, or to an end that was reset: answered with a reset.
                    self._reset(sender)
                    return
                if not data:
                    destination.close()
                    return
                destination.write(data)
                await destination.drain()
        except (ConnectionError, OSError):
            self._reset(sender)
            self._reset(destination)

    def _reset(self, writer: asyncio.StreamWriter) -> None:
        if not writer.transport.is_closing():
            self.resets += 1
        reset(writer)
