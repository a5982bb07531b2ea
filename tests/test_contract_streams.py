"""Acceptance tests of API.md: streams (@mesh.stream_func, mesh.Stream)."""

from __future__ import annotations

import asyncio
import inspect
import threading

import pytest

import mesh
from conftest import wait_until

GO = threading.Event()
CLOSED = threading.Event()
MADE: list = []


class Gen(metaclass=mesh.RpcMeta):
    @mesh.stream_func
    def count(self, n):
        for i in range(n):
            yield i

    @mesh.stream_func
    def first_then_wait(self):
        yield "first"
        assert GO.wait(20)
        yield "second"

    @mesh.stream_func
    def forever(self):
        try:
            i = 0
            while True:
                MADE.append(i)
                yield i
                i += 1
                GO.wait(0.01)
        finally:
            CLOSED.set()

    @mesh.stream_func
    async def acount(self, n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    @mesh.stream_func
    def broken(self):
        yield 1
        yield 2
        raise ValueError("gen broke")


class Reader(metaclass=mesh.RpcMeta):
    def read_all(self, s):
        return list(s)

    def read_first(self, s):
        for item in s:
            return item


def on(srv):
    return {"host": srv.host, "port": srv.port}


@pytest.fixture(autouse=True)
def _reset():
    GO.clear()
    CLOSED.clear()
    MADE.clear()
    yield
    GO.set()


def test_local_stream_func_is_plain_generator():
    g = Gen()
    assert inspect.isgenerator(g.count(3))
    assert list(g.count(3)) == [0, 1, 2]
    ag = g.acount(2)
    assert inspect.isasyncgen(ag)


def test_proxy_returns_stream_iteration_result_done(server):
    g = Gen(to_dist=on(server))
    s = g.count(5)
    assert isinstance(s, mesh.Stream)
    assert list(s) == [0, 1, 2, 3, 4]
    assert s.result(timeout=10) == [0, 1, 2, 3, 4]
    assert s.done()
    assert list(s) == [0, 1, 2, 3, 4]  # every reading from the first item


def test_first_item_readable_while_generator_runs(server):
    g = Gen(to_dist=on(server))
    s = g.first_then_wait()
    it = iter(s)
    assert next(it) == "first"
    assert not s.done()
    GO.set()
    assert next(it) == "second"
    with pytest.raises(StopIteration):
        next(it)
    assert s.result(timeout=10) == ["first", "second"]


def test_async_for_and_await_stream(server):
    g = Gen(to_dist=on(server))

    async def main():
        items = [x async for x in g.acount(4)]
        s2 = g.count(3)
        whole = await s2
        return items, whole

    items, whole = asyncio.run(main())
    assert items == [0, 1, 2, 3] and whole == [0, 1, 2]


def test_stream_cancel_closes_generator(server):
    g = Gen(to_dist=on(server))
    s = g.forever()
    it = iter(s)
    assert next(it) == 0
    assert s.cancel() is True
    assert CLOSED.wait(10)
    with pytest.raises(mesh.Cancelled):
        s.result(timeout=10)


def test_stream_passed_by_reference_to_readers(server, spawn_server):
    other = spawn_server(port=0)
    g = Gen(to_dist=on(server))
    r1 = Reader(to_dist=on(server))
    r2 = Reader(to_dist=on(other))
    s = g.first_then_wait()
    f1 = r1.read_all.remote(s)
    f2 = r2.read_all.remote(s)
    r3 = Reader(to_dist=on(other))
    assert r3.read_first(s) == "first"  # readable while still produced
    GO.set()
    assert f1.result(timeout=10) == ["first", "second"]
    assert f2.result(timeout=10) == ["first", "second"]
    assert list(s) == ["first", "second"]


def test_generator_that_raises(server):
    g = Gen(to_dist=on(server))
    s = g.broken()
    got = []
    with pytest.raises(mesh.RemoteError):
        for item in s:
            got.append(item)
    assert got == [1, 2]
    with pytest.raises(ValueError):
        s.result(timeout=10)


def test_wait_and_as_completed_accept_streams(server):
    g = Gen(to_dist=on(server))
    s = g.first_then_wait()
    quick = Gen(to_dist=on(server)).count(2)  # another object: not queued behind `s`
    done, pending = mesh.wait([s, quick], num_returns=1, timeout=10)
    assert done == [quick] and pending == [s]
    GO.set()
    assert len(list(mesh.as_completed([s, quick], timeout=10))) == 2
    wait_until(s.done)
