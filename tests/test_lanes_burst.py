"""A burst issued on a loop: once the I/O thread sends it, later calls of the burst go straight to the
I/O thread's connection (no lane future in between), and one caller's order to the object holds."""

from __future__ import annotations

import asyncio

import mesh
from mesh.client import _on_loop
from transport import _lanes


class Log(metaclass=mesh.RpcMeta):
    def __init__(self) -> None:
        self.seen: list = []

    @mesh.async_func
    def add(self, x):
        self.seen.append(x)
        return x

    def note(self, x):
        self.seen.append(x)
        return x

    def log(self) -> list:
        return list(self.seen)


def test_a_long_burst_goes_through_the_io_thread_in_order_and_the_lane_serves_again_after(server):
    log = Log(to_dist={"host": "127.0.0.1", "port": server.port})

    async def main():
        futs = [log.add(i) for i in range(3000)]
        direct = sum(type(f.__dict__["_mesh_call"]) is not _lanes.LaneFuture for f in futs)
        assert log.note(3000) == 3000  # a blocking call from the loop's thread, behind the burst
        assert await asyncio.gather(*futs) == list(range(3000))
        later = log.add(3001)
        assert await later == 3001
        return direct

    direct = asyncio.run(asyncio.wait_for(main(), 60))
    assert direct > 0  # (the burst's first calls may be on the lane, until the I/O thread took over)
    assert log.log() == list(range(3002))
    assert not _on_loop.busy
