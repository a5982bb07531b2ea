"""The lanes of an event loop that closed while something still refers to it (a fixture, a
framework keeping its loop) are closed by ``mesh.shutdown()`` (the node's close sweeps them), not
only when the next lane is made."""

from __future__ import annotations

import asyncio
import gc


import mesh
from mesh import RpcMeta
from transport import _lane_registry as registry


class Echo(metaclass=RpcMeta):
    async def aecho(self, x: int) -> int:
        return x


def _open_lanes() -> int:
    return sum(1 for lane in list(registry._all) if not lane.closed)


def test_the_lanes_of_a_closed_loop_that_is_kept_are_closed_by_shutdown(spawn_server) -> None:
    server = spawn_server(port=0)
    echo = Echo(to_dist={"host": server.host, "port": server.port})
    async def main() -> int:
        return await echo.aecho(3)  # issued on the loop: on its lane

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(main()) == 3
    finally:
        loop.close()
    gc.collect()
    had = _open_lanes()
    mesh.shutdown()
    gc.collect()
    assert had <= 1  # (the lane of the closed loop, to the server; none on a build that swept it)
    assert _open_lanes() == 0, f"{_open_lanes()} lane(s) of the closed loop {loop!r} still open"
