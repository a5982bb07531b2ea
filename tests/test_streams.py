"""Token streams (@mesh.stream_func, mesh.Stream): items pushed as made, for / async for / result /
await, errors after the items, back-pressure, cancel, and the agent whose reply streams."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import mesh
from conftest import wait_until
from mesh import AgentBase, Msg, RpcMeta, stream_func


class Gen(metaclass=RpcMeta):
    def __init__(self) -> None:
        self.closed = 0
        self.made = 0

    @stream_func
    def count(self, n: int, pause: float = 0.0):
        for i in range(n):
            self.made = i + 1
            yield i
            if pause:
                time.sleep(pause)

    @stream_func
    def slow_second(self):
        yield ("first", time.monotonic())
        time.sleep(1.0)
        yield ("second", time.monotonic())

    @stream_func
    def fails_after(self, n: int):
        for i in range(n):
            yield i
        raise ValueError(f"broke after {n}")

    @stream_func
    def forever(self):
        try:
            i = 0
            while True:
                self.made = i
                yield i
                i += 1
        finally:
            self.closed += 1

    @stream_func
    def big(self, n: int, size: int):
        for i in range(n):
            yield bytes([i % 256]) * size

    @stream_func
    async def acount(self, n: int, pause: float = 0.0):
        for i in range(n):
            yield i
            await asyncio.sleep(pause)

    @stream_func
    async def aforever(self):
        try:
            i = 0
            while True:
                self.made = i
                yield i
                i += 1
                await asyncio.sleep(0.001)
        finally:
            self.closed += 1

    @stream_func
    async def afails(self):
        yield "a"
        raise KeyError("nope")

    def ping(self) -> str:
        return "pong"


def _proxy(server) -> Gen:
    return Gen(to_dist={"host": server.host, "port": server.port})


# ------------------------------------------------------------------ API shape
def test_stream_func_needs_a_generator():
    with pytest.raises(TypeError, match="generator function"):

        @stream_func
        def plain(self):
            return 1


def test_on_a_local_object_a_stream_func_is_a_plain_generator():
    g = Gen()
    it = g.count(3)
    assert iter(it) is it and list(it) == [0, 1, 2]

    async def collect():
        return [i async for i in g.acount(3)]

    assert asyncio.run(collect()) == [0, 1, 2]


def test_a_proxy_returns_a_stream_at_once_and_reads_it_every_way(server):
    g = _proxy(server)
    t0 = time.monotonic()
    s = g.count(5, 0.2)
    assert isinstance(s, mesh.Stream) and time.monotonic() - t0 < 0.5
    assert list(s) == [0, 1, 2, 3, 4]
    assert s.result(timeout=10) == [0, 1, 2, 3, 4] and s.done()
    assert g.count(0).result(timeout=10) == []
    s2 = g.count(300)
    assert [i for i in s2] == list(range(300))
    assert [i for i in s2] == list(range(300))  # every reading starts from the first item

    async def main():
        a = g.count(4)
        got = [i async for i in a]
        return got, await g.count(3), await g.acount(3)

    assert asyncio.run(main()) == ([0, 1, 2, 3], [0, 1, 2], [0, 1, 2])


def test_the_first_item_is_read_while_the_generator_still_runs(server):
    g = _proxy(server)
    s = g.slow_second()
    it = iter(s)
    first, made = next(it)
    got = time.monotonic()
    assert first == "first"
    assert not s.done()  # the generator is still sleeping before its second item
    second, made2 = next(it)
    assert second == "second" and made2 - got > 0.5  # the first was read well before the second existed


def test_async_for_never_blocks_the_loop(server):
    g = _proxy(server)

    async def main():
        ticks = 0
        stop = False

        async def ticker():
            nonlocal ticks
            while not stop:
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.ensure_future(ticker())
        items = [i async for i in g.acount(5, 0.1)]
        stop = True
        await t
        return items, ticks

    items, ticks = asyncio.run(main())
    assert items == [0, 1, 2, 3, 4] and ticks >= 10


def test_a_generator_that_raises_gives_the_items_then_a_typed_remote_error(server):
    g = _proxy(server)
    got = []
    with pytest.raises(mesh.RemoteError, match="broke after 3") as info:
        for i in g.fails_after(3):
            got.append(i)
    assert got == [0, 1, 2] and isinstance(info.value, ValueError)
    s = g.fails_after(2)
    with pytest.raises(ValueError):
        s.result(timeout=10)
    with pytest.raises(ValueError):  # a failed stream stays failed
        s.result(timeout=10)
    agot = []

    async def main():
        async for i in g.afails():
            agot.append(i)

    with pytest.raises(KeyError):
        asyncio.run(main())
    assert agot == ["a"]
    assert g.ping() == "pong"  # the object serves on


def test_large_items_travel_whole(server):
    g = _proxy(server)
    items = g.big(5, 200_000).result(timeout=30)
    assert [len(b) for b in items] == [200_000] * 5 and [b[0] for b in items] == [0, 1, 2, 3, 4]


def test_streams_work_with_wait_and_as_completed(server):
    g, g2 = _proxy(server), _proxy(server)  # two objects: one object's calls run one after another
    slow, fast = g.count(3, 0.3), g2.count(2)
    done, pending = mesh.wait([slow, fast], num_returns=1, timeout=20)
    assert done == [fast] and pending == [slow]
    order = list(mesh.as_completed([slow, g2.count(1)], timeout=20))
    assert len(order) == 2 and all(s.done() for s in order)
    assert slow.result(timeout=10) == [0, 1, 2]


# ------------------------------------------------------------------ back-pressure and leaving
def test_a_generator_faster_than_its_reader_is_paused(server, monkeypatch):
    g = _proxy(server)
    s = g.forever()
    it = iter(s)
    assert next(it) == 0
    window = _streams_of(server).window
    wait_until(lambda: g.made >= window - 1, timeout=10)
    time.sleep(0.3)  # (not synchronisation: checks that nothing more is made meanwhile)
    assert g.made <= window + 1, (g.made, window)  # paused a window ahead of the reader
    for _ in range(window):
        next(it)
    wait_until(lambda: g.made >= window + 100, timeout=10)  # reading made room
    assert s.cancel() is True
    wait_until(lambda: g.closed == 1, timeout=10)
    with pytest.raises(mesh.Cancelled):
        next(iter(s))
    with pytest.raises(mesh.Cancelled):
        s.result(timeout=10)


def _streams_of(server):
    return server._servicer.streams


def test_cancel_closes_an_async_generator_and_a_finished_one_says_false(server):
    g = _proxy(server)
    s = g.aforever()
    it = iter(s)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    assert s.cancel() is True
    wait_until(lambda: g.closed == 1, timeout=10)
    with pytest.raises(mesh.Cancelled):
        s.result(timeout=10)
    done = g.count(2)
    assert done.result(timeout=10) == [0, 1]
    assert done.cancel() is False and done.result() == [0, 1]


def test_a_never_ending_generator_without_holders_is_closed(server):
    g = _proxy(server)
    s = g.forever()
    it = iter(s)
    assert next(it) == 0
    del it, s  # the only holder goes: the producer is told (release) and closes the generator
    import gc

    gc.collect()
    mesh.client._client.get_client().flush_releases()
    wait_until(lambda: g.closed == 1, timeout=10)
    assert g.ping() == "pong"  # the mailbox is free again


def test_breaking_out_of_a_for_leaves_the_stream_for_other_readers(server):
    g = _proxy(server)
    s = g.count(2000)
    for i in s:
        if i == 10:
            break
    assert s.result(timeout=20) == list(range(2000))


def test_several_readers_each_get_every_item_in_order(server):
    g = _proxy(server)
    s = g.count(3000)
    out: list[list] = [[], [], []]

    def read(k: int) -> None:
        out[k] = list(s)

    threads = [threading.Thread(target=read, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert out == [list(range(3000))] * 3


# ------------------------------------------------------------------ agents whose reply streams
class Talker(AgentBase):
    @stream_func
    def reply(self, x: Msg | None = None):
        for word in ["Hel", "lo ", (x.content if x is not None else "you")]:
            yield Msg(self.name, word)


class ATalker(AgentBase):
    @stream_func
    async def reply(self, x: Msg | None = None):
        for word in ["a", "b", "c"]:
            await asyncio.sleep(0)
            yield Msg(self.name, word, metadata={"chunk": word})


class Upper(AgentBase):
    def reply(self, x: Msg | None = None) -> Msg:
        return Msg(self.name, x.content.upper())


def test_an_agent_whose_reply_streams_gives_chunks_and_the_whole_message(server):
    where = {"host": server.host, "port": server.port}
    a = Talker("a", to_dist=where)
    b = Upper("b", to_dist=where)
    p = a(Msg("user", "bob"))
    assert isinstance(p, mesh.Placeholder)
    chunks = list(p)
    assert [c.content for c in chunks] == ["Hel", "lo ", "bob"] and all(isinstance(c, Msg) for c in chunks)
    assert p.content == "Hello bob" and p.name == "a"
    x = a(Msg("user", "ann"))
    x = b(x)  # seed-style: b gets the whole final message
    assert x.content == "HELLO ANN"
    r = a.reply(Msg("user", "z"))
    assert r.result(timeout=10).content == "Hello z"

    async def main():
        at = ATalker("at", to_dist=where)
        q = at(None)
        got = [c.content async for c in q]
        whole = await q
        return got, whole

    got, whole = asyncio.run(main())
    assert got == ["a", "b", "c"] and whole.content == "abc" and whole.metadata == {"chunk": "c"}


def test_a_local_streaming_agent_is_a_plain_generator():
    a = Talker("a")
    assert [c.content for c in a(Msg("u", "x"))] == ["Hel", "lo ", "x"]
    assert [c.content for c in a.reply(None)] == ["Hel", "lo ", "you"]
