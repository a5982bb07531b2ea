"""asyncio performance work (issue 12's benchmark goals): the behaviour that changed with it.

* An ``await`` on a future whose producer is unreachable and that has a Redis pool reads Redis
  on a thread, never on the event loop.
* A small coroutine call goes from the server's I/O thread straight to its event loop (no
  worker), with actor semantics, errors and the worker path for what it cannot take unchanged.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import mesh
import transport
from mesh._core import redis_results, wire
from mesh.client import _future
from mesh.server import _loop_calls
from conftest import wait_until


# ------------------------------------------------------------- Redis pool read, await side
def _unreachable_future(monkeypatch: pytest.MonkeyPatch, pool: str = "redis://127.0.0.1:1/0") -> mesh.AsyncResult:
    """A future as a consumer holds it, whose producer cannot be reached (every fetch fails at once)."""
    fut = _future._rebuild(False, "tcp://127.0.0.1:9", "t-" + str(time.monotonic_ns()), pool)

    def failed_fetch(self):  # what the transport gives for a producer that is gone
        f = transport.ReplyFuture()
        f.set_exception(transport.PeerUnavailable("tcp://127.0.0.1:9", "connection refused"))
        return f

    monkeypatch.setattr(_future._FutureMixin, "_mesh_start_fetch", failed_fetch)
    return fut


def _ok_entry(value):
    body, buffers = transport.encode(value)
    return {"op": wire.OK}, body, buffers


def test_await_reads_a_dead_producers_redis_pool_without_blocking_the_loop(monkeypatch):
    release = threading.Event()
    readers: list[str] = []

    def slow_fetch(url, task, *, secret=None):  # a slow Redis: it answers once the test says so
        readers.append(threading.current_thread().name)
        assert release.wait(20)
        return _ok_entry({"from": "redis", "task": task})

    monkeypatch.setattr(redis_results, "fetch", slow_fetch)
    fut = _unreachable_future(monkeypatch)

    async def main():
        ticks = 0
        reader = asyncio.create_task(_awaited(fut))
        while not readers:  # the Redis read has started...
            await asyncio.sleep(0.01)
        for _ in range(20):  # ...and the loop keeps running meanwhile
            await asyncio.sleep(0.005)
            ticks += 1
        assert not reader.done()
        release.set()
        return ticks, await asyncio.wait_for(reader, 20)

    ticks, value = asyncio.run(main())
    assert ticks == 20
    assert value == {"from": "redis", "task": fut._mesh_task}
    assert readers and readers[0] != "MainThread"  # read on a thread, not on the loop
    assert fut.result(0) == value  # the value is kept, as result() keeps it


def test_await_with_nothing_in_the_pool_raises_the_producers_failure_and_asks_again_next_time(monkeypatch):
    calls: list[str] = []

    def empty_fetch(url, task, *, secret=None):
        calls.append(task)
        return None

    monkeypatch.setattr(redis_results, "fetch", empty_fetch)
    fut = _unreachable_future(monkeypatch)
    with pytest.raises(mesh.ServerUnavailable, match="connection refused"):
        asyncio.run(asyncio.wait_for(_awaited(fut), 20))
    with pytest.raises(mesh.ServerUnavailable):  # not cached: a later read asks again
        asyncio.run(asyncio.wait_for(_awaited(fut), 20))
    assert len(calls) == 2
    with pytest.raises(mesh.ServerUnavailable):  # a thread's result() still reads Redis itself
        fut.result(5)
    assert len(calls) == 3


async def _awaited(fut):
    return await fut


# ------------------------------------------------------------- server: straight to the loop
class Coro(metaclass=mesh.RpcMeta):
    def __init__(self) -> None:
        self.log: list = []

    async def record(self, x):
        self.log.append(("start", x, threading.current_thread().name))
        await asyncio.sleep(0.01)
        self.log.append(("end", x))
        return x

    def sync_record(self, x):
        self.log.append(("sync", x, threading.current_thread().name))
        return x

    async def fails(self, x):
        raise ValueError(f"bad {x}")

    def history(self):
        return self.log

    async def size(self, data):
        return len(data)


def test_small_and_large_coroutine_calls_run_on_the_loop_in_order_with_sync_ones(spawn_server):
    srv = spawn_server(port=0, capacity=1)
    obj = Coro(to_dist={"host": "127.0.0.1", "port": srv.port})
    futs = []
    for i in range(30):
        futs.append(obj.record(i) if i % 3 else obj.sync_record.remote(i))
    big = obj.size(b"x" * (_loop_calls.SMALL * 4))  # decoded on a worker, still run on the loop
    assert [f.result(timeout=30) for f in futs] == list(range(30))
    assert big.result(timeout=30) == _loop_calls.SMALL * 4
    log = obj.history()
    # one call at a time, in arrival order, sync and async alike
    order = [e[1] for e in log if e[0] in ("start", "sync")]
    assert order == list(range(30))
    for i, entry in enumerate(e for e in log if e[0] != "sync"):
        assert entry[0] == ("start" if i % 2 == 0 else "end")
    assert all(e[2] == "mesh-io" for e in log if e[0] == "start")  # the loop, run by the I/O thread
    assert all("aio" not in e[2] for e in log if e[0] == "sync")  # a worker
    with pytest.raises(ValueError, match="bad 3"):
        obj.fails(3).result(timeout=30)
    with pytest.raises(mesh.RemoteError, match="private"):
        obj._mesh_send({"op": wire.CALL, "obj": obj._mesh_id, "m": "_hidden", "chain": "c"}, [[], {}])


class Shadowed(metaclass=mesh.RpcMeta):
    def __init__(self) -> None:
        self.run = lambda: threading.current_thread().name  # an instance attribute hides the method

    async def run(self):
        return "the class's coroutine"


def test_a_method_shadowed_on_the_instance_is_left_to_the_worker_path(spawn_server):
    srv = spawn_server(port=0)
    obj = Shadowed(to_dist={"host": "127.0.0.1", "port": srv.port})
    name = obj.run().result(timeout=30)
    assert "aio" not in name  # the instance's sync function ran on a worker, not on the loop


def test_on_loop_reads_the_class_without_running_user_code():
    ran: list[str] = []

    class Tricky:
        def __getattr__(self, name):
            ran.append(name)
            raise AttributeError(name)

        @property
        def prop(self):
            ran.append("prop")
            return None

        async def coro(self):
            return 1

        @staticmethod
        async def static_coro():
            return 1

        def plain(self):
            return 1

    t = Tricky()
    assert _loop_calls._on_loop(t, "coro")
    assert _loop_calls._on_loop(t, "static_coro")
    assert not _loop_calls._on_loop(t, "plain")
    assert not _loop_calls._on_loop(t, "prop")
    assert not _loop_calls._on_loop(t, "missing")
    assert ran == []


def test_coroutine_calls_to_many_objects_interleave_beyond_capacity(spawn_server):
    srv = spawn_server(port=0, capacity=1)
    where = {"host": "127.0.0.1", "port": srv.port}
    agents = [Coro(to_dist=where) for _ in range(200)]
    futs = [a.record(i) for i, a in enumerate(agents)]
    assert wait_until(lambda: all(f.done() for f in futs), timeout=30)
    assert [f.result(0) for f in futs] == list(range(200))


# ------------------------------------------------------------- client: mesh futures as asyncio futures
class Calc(metaclass=mesh.RpcMeta):
    def echo(self, x):
        return x

    def boom(self, x):
        raise KeyError(x)

    async def nap(self, s, x):
        await asyncio.sleep(s)
        return x

    async def gathers(self, other, n):  # a server coroutine: gather there still goes through Tasks
        return list(await asyncio.gather(*(other.echo.remote(i) for i in range(n))))

    def big(self, n):
        return b"b" * n


def test_gather_wait_and_as_completed_take_mesh_futures_as_asyncio_futures(spawn_server):
    srv = spawn_server(port=0)
    where = {"host": "127.0.0.1", "port": srv.port}
    c, other = Calc(to_dist=where), Calc(to_dist=where)
    outside = c.echo.remote(0)
    assert not asyncio.isfuture(outside)  # outside a running loop: an awaitable, as before

    async def main():
        futs = [c.echo.remote(i) for i in range(300)]
        assert not asyncio.isfuture(futs[0])  # asked by anything but gather / wait / as_completed
        task = asyncio.ensure_future(futs[0])
        assert task is not futs[0] and await task == 0
        with pytest.raises(asyncio.TimeoutError):  # wait_for keeps its meaning: the call goes on
            await asyncio.wait_for(c.nap(0.5, "late"), 0.05)
        gathered = asyncio.gather(*futs)
        assert gathered._children[0] is futs[0]  # taken as it is: no Task per future
        assert await gathered == list(range(300))
        big = c.big.remote(200_000)  # a big value is fetched before the callback says done
        assert await asyncio.gather(big, c.echo.remote("x")) == [b"b" * 200_000, "x"]
        with pytest.raises(KeyError):
            await asyncio.gather(c.echo.remote(1), c.boom.remote("k"))
        got = await asyncio.gather(c.boom.remote("k"), c.echo.remote(2), return_exceptions=True)
        assert isinstance(got[0], KeyError) and isinstance(got[0], mesh.RemoteError) and got[1] == 2
        order = [await f for f in asyncio.as_completed([c.nap(0.3, "slow"), other.nap(0, "quick")], timeout=20)]
        assert order == ["quick", "slow"]
        slow, quick = c.nap(0.3, 1), other.nap(0, 2)
        done, pending = await asyncio.wait([slow, quick], return_when=asyncio.FIRST_COMPLETED)
        assert done == {quick} and pending == {slow}
        assert await slow == 1
        seen: list = []
        f = c.echo.remote(5)
        f.add_done_callback(seen.append)
        f.add_done_callback(lambda _f: seen.append("second"))
        assert f.remove_done_callback(seen.append) == 1
        assert await f == 5
        await asyncio.sleep(0)
        assert seen == ["second"] and f.exception() is None and not f.cancelled()
        # inside a server's coroutine: gathered through Tasks (the awaits let the chain re-enter)
        assert await c.gathers(other, 50) == list(range(50))

    asyncio.run(asyncio.wait_for(main(), 60))
    assert outside.result(timeout=10) == 0


def test_cancelling_a_gather_cancels_its_mesh_calls(spawn_server):
    srv = spawn_server(port=0)
    where = {"host": "127.0.0.1", "port": srv.port}
    a, b = Calc(to_dist=where), Calc(to_dist=where)

    async def main():
        futs = [a.nap(30, 1), b.nap(30, 2)]
        gathered = asyncio.gather(*futs)
        await asyncio.sleep(0.2)
        gathered.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gathered
        return futs

    futs = asyncio.run(asyncio.wait_for(main(), 30))
    for f in futs:
        with pytest.raises(mesh.Cancelled):
            f.result(timeout=10)


# ------------------------------------------------------------- the server process's collector
def test_a_dedicated_server_process_collects_less_often_unless_told_not_to(monkeypatch):
    import gc

    from mesh.server import _gc

    before = gc.get_threshold()
    try:
        monkeypatch.setenv(_gc.ENV, "default")
        assert _gc.tune() is False and gc.get_threshold() == before
        monkeypatch.delenv(_gc.ENV)
        assert _gc.tune() is True
        assert gc.get_threshold() == _gc.THRESHOLDS and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_server_inside_an_application_leaves_its_collector_alone():
    import gc

    before = gc.get_threshold()
    srv = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)
    try:
        obj = Coro(to_dist={"host": "127.0.0.1", "port": srv.port})
        assert obj.record(1).result(timeout=30) == 1
        assert gc.get_threshold() == before
    finally:
        srv.shutdown()
