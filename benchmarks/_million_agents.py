"""Classes of ``benchmarks/million.py``: small agents, importable by name (servers started with this
directory on ``PYTHONPATH`` import them; nothing travels by value)."""

from __future__ import annotations

import asyncio

from mesh import RpcMeta, async_func


class Small(metaclass=RpcMeta):
    """A small agent: one integer of state, one method."""

    def __init__(self, k: int) -> None:
        self.k = k

    @async_func
    def ping(self, x: int) -> int:
        return self.k + x


class Napper(metaclass=RpcMeta):
    """A coroutine agent whose reply takes ``seconds`` (a stand-in for an LLM call)."""

    def __init__(self, k: int) -> None:
        self.k = k

    async def nap(self, seconds: float) -> int:
        await asyncio.sleep(seconds)
        return self.k
