"""A stream call made once its deadline has passed is never sent, like an async call: it returns a
``mesh.Stream`` (a streaming Placeholder for an agent's reply) that fails with ``DeadlineExceeded``
at the first read, instead of raising at the call."""

from __future__ import annotations

import asyncio
import time

import pytest

import mesh
from mesh import AgentBase, Msg, RpcMeta, stream_func


class Gen(metaclass=RpcMeta):
    def __init__(self) -> None:
        self.started = 0

    @stream_func
    def items(self, n: int):
        self.started += 1
        yield from range(n)

    def runs(self) -> int:
        return self.started


class Talker(AgentBase):
    @stream_func
    def reply(self, x: Msg | None = None):
        yield Msg(self.name, "hi")


def _late(fn):
    with mesh.deadline(0.01):
        time.sleep(0.05)  # past it
        t0 = time.monotonic()
        fut = fn()
        took = time.monotonic() - t0
    assert took < 1  # returned at once, sent nothing
    return fut


def test_a_stream_call_past_its_deadline_fails_at_the_read(server) -> None:
    gen = Gen(to_dist={"host": server.host, "port": server.port})
    stream = _late(lambda: gen.items(3))
    assert isinstance(stream, mesh.Stream)
    assert stream.done()
    with pytest.raises(mesh.DeadlineExceeded):
        list(stream)
    with pytest.raises(mesh.DeadlineExceeded):
        stream.result()
    with pytest.raises(mesh.DeadlineExceeded):
        stream.result(timeout=5)

    async def read() -> None:
        with pytest.raises(mesh.DeadlineExceeded):
            await stream
        with pytest.raises(mesh.DeadlineExceeded):
            async for _ in stream:
                pass

    asyncio.run(read())
    assert stream.cancel() is False
    done, pending = mesh.wait([stream], timeout=5)
    assert done == [stream] and pending == []
    assert gen.runs() == 0  # the generator never started
    assert gen.items(2).result() == [0, 1]  # without a deadline: as before


def test_a_fresh_stream_under_a_passed_deadline_in_asyncio(server) -> None:
    gen = Gen(to_dist={"host": server.host, "port": server.port})

    async def main() -> None:
        async with mesh.deadline(0.01):
            await asyncio.sleep(0.05)
            stream = gen.items(3)
        with pytest.raises(mesh.DeadlineExceeded):
            async for _ in stream:
                pass

    asyncio.run(main())
    assert gen.runs() == 0


def test_a_streaming_reply_past_its_deadline_fails_at_the_read(server) -> None:
    talker = Talker("t", to_dist={"host": server.host, "port": server.port})
    reply = _late(lambda: talker(Msg("u", "x")))
    assert isinstance(reply, mesh.Placeholder)
    with pytest.raises(mesh.DeadlineExceeded):
        list(reply)
    with pytest.raises(mesh.DeadlineExceeded):
        reply.content
