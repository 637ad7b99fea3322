"""The one shape of every long-lived part: ``start``/``stop``, used as ``async with``."""

from __future__ import annotations

import asyncio
import signal
from typing import Self


class Service:
    """Subclasses implement ``start`` and ``stop``; ``async with`` runs them around a block."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def terminate(process: asyncio.subprocess.Process | None, timeout: float) -> None:
    """SIGTERM ``process`` if it still runs; SIGKILL it if it has not exited ``timeout``
    seconds later."""
    if process is None or process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
