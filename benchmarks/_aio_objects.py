"""Classes of ``benchmarks/aio_agents.py``: coroutine agents and no-op methods of each kind.

An importable module (not ``__main__``), like ``_objects.py``, so a server can import them by name.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mesh import RpcMeta, async_func, sync_func


class Sleepy(metaclass=RpcMeta):
    """A coroutine agent: one ``await asyncio.sleep`` per call."""

    async def nap(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds


class Noop(metaclass=RpcMeta):
    def sync_noop(self, x: Any) -> Any:
        return x

    @async_func
    def future_noop(self, x: Any) -> Any:
        return x

    async def async_noop(self, x: Any) -> Any:
        return x

    @sync_func
    async def waited_noop(self, x: Any) -> Any:
        return x
