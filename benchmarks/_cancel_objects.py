"""Objects of benchmarks/cancel.py (importable by the server subprocesses)."""

from __future__ import annotations

import asyncio
import time

import mesh


class Hop(metaclass=mesh.RpcMeta):
    """A coroutine that sleeps, or relays to the next hop; ``ended`` holds when finallys ran."""

    def __init__(self) -> None:
        self.started = 0
        self.ended: list[float] = []  # time.monotonic() (system-wide on Linux: comparable across processes)

    async def sleep(self, seconds: float) -> str:
        self.started += 1
        try:
            await asyncio.sleep(seconds)
        finally:
            self.ended.append(time.monotonic())
        return "slept"

    async def relay(self, nxt: Hop, seconds: float) -> str:
        return await nxt.sleep(seconds)

    async def relay2(self, mid: Hop, last: Hop, seconds: float) -> str:
        return await mid.relay(last, seconds)

    def reset(self) -> None:
        self.started = 0
        self.ended = []
