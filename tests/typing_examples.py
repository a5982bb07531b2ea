"""Typical user code that type checkers must accept (checked by mypy in tests/test_aio_client.py)."""

from __future__ import annotations

import asyncio

import mesh
from mesh import AgentBase, DistConf, Msg


class WebAgent(AgentBase):
    def __init__(self, name: str, timeout: float = 5.0) -> None:
        super().__init__(name)
        self.timeout = timeout

    def reply(self, x: Msg | None = None) -> Msg:
        return Msg(self.name, "ok")


class AsyncAgent(AgentBase):
    async def reply(self, x: Msg | None = None) -> Msg:
        return Msg(self.name, "ok")


def distributed() -> None:
    a = WebAgent("W0").to_dist()
    b = WebAgent("W1", to_dist=True)
    c = WebAgent("W2", timeout=1.0, to_dist=DistConf(host="localhost", port=12001))
    d = WebAgent("W3", to_dist={"host": "localhost", "port": 12001})
    e = WebAgent("W4").to_dist(host="localhost", port=12001, lazy_launch=False)
    msg = a(None)
    print(msg.content, b, c, d, e)
    done, pending = mesh.wait([a(None), b(None)], num_returns=1, timeout=5)
    for fut in mesh.as_completed(done + pending):
        print(fut)


async def in_asyncio() -> None:
    agent = AsyncAgent("A").to_dist()
    msg = await agent(Msg("user", "hi"))
    print(msg.content)
    local = AsyncAgent("L")
    print((await local(None)).content)


if __name__ == "__main__":
    asyncio.run(in_asyncio())
